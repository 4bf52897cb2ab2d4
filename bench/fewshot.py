"""Gato's few-shot study at CPU scale: fine-tune a pretrained model on a held-out task with N expert
episodes, against training from scratch on the same episodes for the same steps.

  nice -n 10 python bench/fewshot.py --config experiments/fewshot_metaworld.py
  python bench/fewshot.py --config experiments/fewshot_metaworld.py --workdir /tmp/fs \\
      --config.fewshot.episodes=1,10 --config.num_train_steps=100 --config.fewshot.finetune_steps=50

Trainings run as `gato-train` processes (python -m gato_jax.train: SeqIO's registries are per process
and a task's data_dir is fixed when it is registered); evaluations run in this process.

1. Data: the pretraining mixture's datasets and the held-out task (max N episodes) in
   config.data.data_dir, and the held-out task with N episodes in `<data_dir>_<N>` for every smaller N
   (`gato-data build --skip_built`: built ones are kept; episode seeds are shared, so the N-episode
   train split is the first N episodes of the largest one).
2. Pretrain config.num_train_steps on config.data.mixture (the held-out task is not in it).
3. Zero-shot: the pretrained checkpoint evaluated on the held-out task (as `gato-eval
   --config.eval.tasks=<held_out>` does).
4. For every N: fine-tune from the pretrained parameters (config.init_from) and train from scratch,
   both on the held-out task alone, config.fewshot.finetune_steps steps at the same learning rate.
5. Each evaluated in the simulator (config.eval: episodes, sampling, demo prompt), always against the
   full held-out dataset's expert / random returns, with bootstrap intervals.

Writes <out>/fewshot.json, fewshot.md and fewshot.png (default bench/results); runs live under
--workdir/runs (removed first, so the timings are of this invocation).
"""

import copy
import json
import os
import shutil
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io, study_runs  # noqa: E402  (the repository root is on sys.path now)

from gato_jax import cli_flags  # pylint: disable=g-import-not-at-top

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                           "Directory of fewshot.json / fewshot.md / fewshot.png.")
_GATO_DATA = flags.DEFINE_string("gato_data", study_runs.GATO_DATA,
                                 "The gato-data executable that builds missing datasets.")
DEFAULT_WORKDIR = "demo_output/fewshot"


def episode_counts(config) -> list[int]:
  counts = sorted({int(n) for n in str(config.fewshot.episodes).split(",") if n.strip()})
  if not counts or counts[0] < 1:
    raise ValueError(f"config.fewshot.episodes={config.fewshot.episodes!r}: expected positive integers")
  return counts


def data_dir_for(config, episodes: int) -> str:
  """Where the held-out task with `episodes` train episodes lives (the largest count: the main dir)."""
  base = os.path.expanduser(config.data.data_dir)
  return base if episodes == max(episode_counts(config)) else f"{base}_{episodes}"


def ensure_dataset(name: str, data_dir: str, episodes: int, validation: int) -> None:
  study_runs.ensure_dataset(name, data_dir, episodes, validation, gato_data=_GATO_DATA.value)


def ensure_data(config) -> None:
  from gato_jax.data import mixtures  # pylint: disable=g-import-not-at-top
  f = config.fewshot
  pretrain = list(mixtures.parse_mixture(config.data.mixture))
  if f.held_out in pretrain:
    raise ValueError(f"config.fewshot.held_out={f.held_out!r} is in config.data.mixture: it must be held out")
  for name in pretrain:
    ensure_dataset(name, os.path.expanduser(config.data.data_dir), int(f.pretrain_episodes),
                   int(f.validation_episodes))
  for n in episode_counts(config):
    ensure_dataset(f.held_out, data_dir_for(config, n), n, int(f.validation_episodes))


def finetune_overrides(config, episodes: int, init_from: str) -> dict:
  """The --config.* overrides that turn the pretraining config into one fine-tuning run."""
  f = config.fewshot
  return {"data.mixture": f"{f.held_out}:1", "data.data_dir": data_dir_for(config, episodes),
          "num_train_steps": f.finetune_steps, "checkpoint_every_steps": f.finetune_steps,
          "log_every_steps": max(1, int(f.finetune_steps) // 5),
          "optimizer.peak_learning_rate": f.peak_learning_rate, "optimizer.warmup_steps": f.warmup_steps,
          "init_from": init_from}


train = study_runs.train


def evaluate(config, workdir: str) -> dict:
  """The held-out task's score of the workdir's last checkpoint (what `gato-eval
  --config.eval.tasks=<held_out>` reports), against the full dataset's expert / random returns and
  with its validation episodes as prompts. In this process: evaluation registers no SeqIO task."""
  from gato_jax.evaluation.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  held_out = config.fewshot.held_out
  c = copy.deepcopy(config)
  c.data.data_dir = data_dir_for(config, max(episode_counts(config)))
  start = time.perf_counter()
  entry = Evaluator(c, workdir, tasks=[held_out]).evaluate_checkpoint()["tasks"][held_out]
  keys = ("normalized_score", "score_ci_low", "score_ci_high", "mean_return", "expert_return", "random_return",
          "success_rate", "crashed")
  return dict({k: entry.get(k) for k in keys}, eval_episodes=entry["episodes"],
              eval_seconds=time.perf_counter() - start)


def run_study(config, workdir: str) -> dict:
  """Every step of the module docstring; returns the JSON result."""
  started, load = time.time(), os.getloadavg()
  study_runs.use_compile_cache(workdir)
  runs_dir = os.path.join(os.path.abspath(workdir), "runs")
  shutil.rmtree(runs_dir, ignore_errors=True)
  ensure_data(config)
  data_seconds = time.time() - started
  pretrain_dir = os.path.join(runs_dir, "pretrain")
  pretrain = train(pretrain_dir, {})
  runs = [dict(name="zero-shot", init="pretrained", episodes=0, steps=0, **evaluate(config, pretrain_dir))]
  for n in episode_counts(config):
    for init, source in (("pretrained", pretrain_dir), ("scratch", "")):
      run_dir = os.path.join(runs_dir, f"{init}_{n}")
      overrides = finetune_overrides(config, n, source)
      runs.append(dict(name=f"{init}_{n}", init=init, episodes=n, **train(run_dir, overrides),
                       **evaluate(config, run_dir)))
      logging.info("few-shot %s: %s", runs[-1]["name"], runs[-1])
  return {
      "held_out": config.fewshot.held_out, "pretrain_mixture": config.data.mixture,
      "pretrain": pretrain, "runs": runs, "config": json.loads(config.to_json_best_effort()),
      "wall_seconds": time.time() - started, "data_seconds": data_seconds,
      "machine": study_runs.machine(load),
      "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
  }


def _score(run) -> str:
  return f"{run['normalized_score']:.2f} [{run['score_ci_low']:.2f}, {run['score_ci_high']:.2f}]"


def markdown(result: dict) -> str:
  c, runs = result["config"], result["runs"]
  by = {(r["init"], r["episodes"]): r for r in runs}
  zero = by[("pretrained", 0)]
  counts = sorted({r["episodes"] for r in runs if r["episodes"]})
  m = result["machine"]
  lines = [
      "# Few-shot fine-tuning (bench/fewshot.py)", "",
      f"Held-out task: **{result['held_out']}**. Pretraining mixture: `{result['pretrain_mixture']}` "
      f"({result['pretrain']['steps']} steps of {c['batch_size']} x {c['data']['sequence_length']} tokens). "
      f"Fine-tuning and from scratch: {c['fewshot']['finetune_steps']} steps on the held-out task alone, "
      f"peak learning rate {c['fewshot']['peak_learning_rate']}. Scores: expert-normalised return over "
      f"{zero['eval_episodes']} sampled rollouts on unseen seeds, demo-prompted, with "
      f"{int(c['eval']['confidence'] * 100)}% bootstrap intervals.", "",
      f"Machine: {m['platform']} ({m['cpus']} cores, shared), jax {m['jax']} on {m['backend']} "
      f"({m['devices']} device(s)); load average {m['load_average_start'][0]:.1f} at start, "
      f"{m['load_average_end'][0]:.1f} at the end. Wall time {result['wall_seconds'] / 60:.1f} min "
      f"({result['date_utc']} UTC).", "",
      "| expert episodes | fine-tuned from pretrained | from scratch |", "| ---: | --- | --- |",
      f"| 0 (zero-shot) | {_score(zero)} | n/a |",
  ]
  lines += [f"| {n} | {_score(by[('pretrained', n)])} | {_score(by[('scratch', n)])} |" for n in counts]
  lines += ["", "| run | episodes | steps | final loss | action acc. | mean return | success | train s | eval s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| pretrain | - | {result['pretrain']['steps']} | {_fmt(result['pretrain']['final_loss'])} | "
            f"{_fmt(result['pretrain']['final_action_accuracy'])} | - | - | "
            f"{result['pretrain']['train_seconds']:.0f} | - |"]
  for r in runs:
    lines.append(f"| {r['name']} | {r['episodes']} | {r['steps']} | {_fmt(r.get('final_loss'))} | "
                 f"{_fmt(r.get('final_action_accuracy'))} | {r['mean_return']:.1f} | {_fmt(r.get('success_rate'))} | "
                 f"{r.get('train_seconds', 0):.0f} | {r['eval_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def _fmt(x) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for init, color in (("pretrained", "tab:blue"), ("scratch", "tab:orange")):
    rs = sorted((r for r in result["runs"] if r["init"] == init and r["episodes"]), key=lambda r: r["episodes"])
    x = [r["episodes"] for r in rs]
    y = [r["normalized_score"] for r in rs]
    err = [[v - r["score_ci_low"] for v, r in zip(y, rs)], [r["score_ci_high"] - v for v, r in zip(y, rs)]]
    label = "fine-tuned from pretrained" if init == "pretrained" else "from scratch"
    ax.errorbar(x, y, yerr=err, marker="o", capsize=4, color=color, label=label)
  zero = next(r for r in result["runs"] if r["episodes"] == 0)
  ax.axhline(zero["normalized_score"], color="tab:blue", linestyle=":", label="pretrained, zero-shot")
  ax.set_xscale("log")
  ax.set_xlabel(f"expert episodes of {result['held_out']}")
  ax.set_ylabel("expert-normalised score")
  ax.set_title(f"Few-shot: {result['held_out']} held out of pretraining")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(result: dict, out: str) -> dict[str, str]:
  files = results_io.write_results(out, "fewshot", result, markdown(result), echo=False)
  files["png"] = os.path.join(out, "fewshot.png")
  plot(result, files["png"])
  return files


def main(argv) -> None:
  config = study_runs.study_config(argv, "fewshot", "experiments/fewshot_metaworld.py")
  result = run_study(config, _WORKDIR.value or DEFAULT_WORKDIR)
  files = write(result, _OUT.value)
  print(markdown(result), flush=True)
  print(f"Wrote {', '.join(files.values())}", flush=True)


if __name__ == "__main__":
  cli_flags.isolate_caches()
  app.run(main, flags_parser=cli_flags.parse_flags)
