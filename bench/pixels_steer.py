"""Pixels that steer: a continuous-control task whose goal is only in the camera, learned above random.

  nice -n 10 python bench/pixels_steer.py --config experiments/pixels_steer.py
  python bench/pixels_steer.py --config experiments/pixels_steer.py --render_only   # md from the JSON

For each task of config.study.tasks (dm_control reacher easy from its 64x64 top-down camera, and its
state twin as the control): its datasets built (config.study.data, kept between runs), one gato-train
run on that task alone at config.study.sizes' first size for its steps, then config.eval's sampled,
demo-prompted rollouts on unseen seeds, expert-normalised against the data's expert and random returns
with a bootstrap interval. "Above random" means the interval's low end is above 0. The runs share the
study's harness (bench/study_runs.py, bench/generalist.py's evaluation).

Writes <out>/pixels_steer.json and pixels_steer.md (default bench/results); runs live under --workdir.
"""

import json
import os
import shutil
import sys
import time

from absl import app, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import generalist, results_io, study_runs  # noqa: E402  (the repository root is on sys.path now)

from gato_jax import cli_flags  # pylint: disable=g-import-not-at-top

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
_OUT, _RENDER_ONLY = generalist._OUT, generalist._RENDER_ONLY  # pylint: disable=protected-access  # --out, --render_only
DEFAULT_WORKDIR = "demo_output/pixels_steer"


def tasks(config) -> list[str]:
  names = [t.strip() for t in str(config.study.tasks).split(",") if t.strip()]
  if not names:
    raise ValueError("config.study.tasks is empty")
  return names


def run(config, workdir: str) -> dict:
  started, load = time.time(), os.getloadavg()
  study_runs.use_compile_cache(workdir)
  runs_dir = os.path.join(os.path.abspath(workdir), "runs")
  shutil.rmtree(runs_dir, ignore_errors=True)
  names = tasks(config)
  generalist.ensure_data(config, names)
  data_seconds = time.time() - started
  size = generalist.sizes(config)[0]
  steps = int(config.study[size].steps)
  out = {}
  for name in names:
    run_dir = os.path.join(runs_dir, name)
    overrides = dict(generalist.model_overrides(config, size), **{
        "data.mixture": name, "num_train_steps": steps, "checkpoint_every_steps": steps,
        "log_every_steps": max(1, min(int(config.log_every_steps), steps // 4)),
        "optimizer.warmup_steps": max(1, min(int(config.optimizer.warmup_steps), steps // 5))})
    entry = {"run": study_runs.train(run_dir, overrides)}
    entry.update(generalist.evaluate(config, size, run_dir, [name], {}, language=False))
    entry["score"] = entry.pop("tasks")[name]
    out[name] = entry
    logging.info("[pixels_steer] %s: %d steps in %.0f s, normalised %.2f [%.2f, %.2f]", name, steps,
                 entry["run"]["train_seconds"], entry["score"]["normalized_score"],
                 entry["score"]["score_ci_low"], entry["score"]["score_ci_high"])
  return {"config": {"tasks": names, "data": str(config.study.data), "size": size,
                     "model": config.study[size].to_dict(), "steps": steps, "batch_size": int(config.batch_size),
                     "sequence_length": int(config.data.sequence_length),
                     "episodes_per_task": int(config.eval.episodes_per_task),
                     "temperature": float(config.eval.temperature)},
          "tasks": out, "data_seconds": data_seconds, "total_seconds": time.time() - started,
          "machine": study_runs.machine(load)}


def markdown(result: dict, discussion: str = "") -> str:
  c = result["config"]
  lines = [
      "# Pixels that steer: dm_control reacher from its camera alone", "",
      f"One gato-train run per task at the study's {c['size']} size ({c['model']['num_layers']} x "
      f"{c['model']['embed_dim']}, patch ResNet), {c['steps']} steps of {c['batch_size']} windows of "
      f"{c['sequence_length']} tokens, on that task alone (episodes: {c['data']}, train / validation / "
      f"return-measuring). Scores: {c['episodes_per_task']} sampled (temperature {c['temperature']}), "
      "demo-prompted rollouts on unseen seeds, (R - random) / (expert - random) with 95% bootstrap "
      "intervals; above random when the interval's low end is above 0.", "",
      "| task | observation | normalised score | return | expert | random | final train action acc | "
      "train | eval | above random |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
  for name, e in result["tasks"].items():
    s = e["score"]
    seen = "64x64 RGB camera only" if name.endswith("_pixels") else "state (joint angles, target vector, velocities)"
    lines.append(f"| `{name}` | {seen} | {s['normalized_score']:.2f} [{s['score_ci_low']:.2f}, "
                 f"{s['score_ci_high']:.2f}] | {s['mean_return']:.1f} | {s['expert_return']:.1f} | "
                 f"{s['random_return']:.1f} | {e['run']['final_action_accuracy']:.2f} | "
                 f"{e['run']['train_seconds'] / 60:.1f} min | {e['eval_seconds']:.0f} s | "
                 f"{'yes' if s['score_ci_low'] > 0 else 'no'} |")
  m = result["machine"]
  lines += ["", f"Data built in {result['data_seconds'] / 60:.1f} min (kept for reruns); the whole run "
            f"{result['total_seconds'] / 60:.1f} min on {m['cpus']} CPUs (load {m['load_average_start'][0]:.1f} "
            f"at the start, {m['load_average_end'][0]:.1f} at the end), jax {m['jax']}.", ""]
  if discussion:
    lines += [discussion, ""]
  return "\n".join(lines)


def main(argv) -> None:
  config = study_runs.study_config(argv, "study.tasks", "experiments/pixels_steer.py")
  if _RENDER_ONLY.value:
    with open(os.path.join(_OUT.value, "pixels_steer.json")) as f:
      result = json.load(f)
  else:
    result = run(config, _WORKDIR.value or DEFAULT_WORKDIR)
  text = markdown(result, str(config.study.get("discussion", "")))
  files = results_io.write_results(_OUT.value, "pixels_steer", result, text)
  print(f"Wrote {', '.join(files.values())}", flush=True)


if __name__ == "__main__":
  cli_flags.isolate_caches()
  app.run(main, flags_parser=cli_flags.parse_flags)
