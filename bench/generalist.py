"""Gato's generalist-vs-specialists comparison at CPU scale: one model on every domain's tasks plus text
and captions, against one specialist per domain trained on that domain alone, at two model sizes.

  nice -n 10 python bench/generalist.py --config experiments/generalist_study.py
  python bench/generalist.py --config experiments/generalist_study.py --render_only   # md / png from the JSON

1. Data: every dataset of config.study.domains, text and captions in config.data.data_dir, with the
   episode counts of config.study.data (`gato-data build --skip_built`: built ones are kept).
2. Capped references: evaluation episodes stop at config.study.max_steps; every task whose episodes
   are longer is scored against its scripted expert and the random policy rolled out at the same cap
   on the same evaluation seeds (cached in the data_dir), not against the data's full-length returns.
   A `_pixels` task takes the references of its state twin when that is built (same simulator, seeds
   and expert: the same returns, without rendering).
3. For each size of config.study.sizes (the same batch, window and learning rate; the size's steps):
   - the generalist: `steps` steps on the mixture of every task: control_share split evenly over the
     control tasks, text_share on text, caption_share on captions;
   - one specialist per domain on that domain's tasks alone (the same relative rates), and one
     "language" specialist on text + captions, each for round(steps x its share of the mixture) steps:
     together they spend the generalist's compute, each on its own data.
   Every run is a `gato-train` process (bench/study_runs.py).
4. Scores: every control task with config.eval.episodes_per_task sampled, demo-prompted rollouts on
   unseen seeds (the generalist on all, a specialist on its domain's), expert-normalised with
   bootstrap intervals; per domain the IQM (stratified bootstrap interval) and the fraction of tasks
   above 0.5 of expert; the validation loss on text and captions (generalist vs language specialist).

Writes <out>/generalist.json, generalist.md and generalist.png (default bench/results); runs live under
--workdir/runs (removed first, so the timings are of this invocation).
"""

import copy
import fnmatch
import json
import os
import shutil
import sys
import time

from absl import app, flags, logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io, study_runs  # noqa: E402  (the repository root is on sys.path now)

from gato_jax import cli_flags  # pylint: disable=g-import-not-at-top

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
# Shared with bench/pixels_steer.py, which runs on this module's harness.
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                           "Directory of the study's results (<study>.json, .md, and a plot if it has one).")
_RENDER_ONLY = flags.DEFINE_bool("render_only", False, "Only write the markdown (and plot) again from "
                                 "<out>/<study>.json (with the config's study.discussion, if any).")
DEFAULT_WORKDIR = "demo_output/generalist"
LANGUAGE = "language"  # the text + captions "domain" (its specialist; no rollouts)
THRESHOLD = 0.5  # Gato's own measure: the fraction of tasks above 50% of expert


# ----------------------------------------------------------------------------------------------- plan
def domains(config) -> dict[str, list[str]]:
  """config.study.domains ("domain=task,task;domain=...") -> {domain: [tasks]}, checked."""
  out = {}
  for part in str(config.study.domains).split(";"):
    if not part.strip():
      continue
    name, _, tasks = part.partition("=")
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not name.strip() or not names or name.strip() == LANGUAGE:
      raise ValueError(f"config.study.domains: bad entry {part!r} (expected domain=task,task)")
    out[name.strip()] = names
  every = [t for ts in out.values() for t in ts]
  if len(out) < 2 or len(set(every)) != len(every):
    raise ValueError(f"config.study.domains={config.study.domains!r}: at least two domains, no task twice")
  return out


def rates(config) -> dict[str, float]:
  """{task: rate} of the generalist's mixture (sums to 1)."""
  s = config.study
  control = [t for ts in domains(config).values() for t in ts]
  out = {t: float(s.control_share) / len(control) for t in control}
  out.update({"text": float(s.text_share), "captions": float(s.caption_share)})
  total = sum(out.values())
  return {t: r / total for t, r in out.items()}


def shares(config) -> dict[str, float]:
  """{domain (and "language"): its share of the generalist's mixture}."""
  r = rates(config)
  out = {d: sum(r[t] for t in ts) for d, ts in domains(config).items()}
  out[LANGUAGE] = r["text"] + r["captions"]
  return out


def mixture(config, domain: str | None = None) -> str:
  """The generalist's mixture (domain None) or a specialist's: its tasks at the generalist's rates."""
  r = rates(config)
  tasks = list(r) if domain is None else (["text", "captions"] if domain == LANGUAGE
                                          else domains(config)[domain])
  return ",".join(f"{t}:{r[t]:.6g}" for t in tasks)


def specialist_steps(steps: int, share: float) -> int:
  return max(1, int(round(steps * share)))


def sizes(config) -> list[str]:
  names = [n.strip() for n in str(config.study.sizes).split(",") if n.strip()]
  for n in names:
    if n not in config.study:
      raise ValueError(f"config.study.sizes names {n!r} but config.study has no {n!r} block")
  return names


def model_overrides(config, size: str) -> dict:
  m = config.study[size]
  return {f"model.{k}": m[k] for k in ("num_layers", "num_heads", "embed_dim", "mlp_dim")}


def run_overrides(config, size: str, domain: str | None, steps: int) -> dict:
  """The --config.* overrides of one training (the generalist: domain None)."""
  return dict(model_overrides(config, size), **{
      "data.mixture": mixture(config, domain), "num_train_steps": steps, "checkpoint_every_steps": steps,
      "log_every_steps": max(1, min(int(config.log_every_steps), steps // 4)),
      "optimizer.warmup_steps": max(1, min(int(config.optimizer.warmup_steps), steps // 5))})


def eval_config(config, size: str):
  c = copy.deepcopy(config)
  for k, v in model_overrides(config, size).items():
    c.model[k.split(".", 1)[1]] = v
  return c


# ----------------------------------------------------------------------------------------------- data
def data_counts(config, name: str) -> tuple[int, int, int]:
  """(train, validation, return) episodes of dataset `name` (0: the builder's default)."""
  for entry in str(config.study.data).split(","):
    pattern, _, counts = entry.partition("=")
    if pattern.strip() and fnmatch.fnmatch(name, pattern.strip()):
      train, validation, returns = (int(x) for x in counts.split("/"))
      return train, validation, returns
  raise ValueError(f"config.study.data has no entry for {name!r}")


def ensure_data(config, names: list[str] | None = None) -> None:
  """The text tokenizer and every dataset of `names` (default: text, captions and every study task)."""
  from gato_jax.data.vocabulary import sentencepiece_model_path  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(config.data.data_dir)
  if not os.path.exists(sentencepiece_model_path(config.vocab, data_dir)):
    study_runs.run([study_runs.GATO_DATA, "build", "--dataset=sentencepiece", f"--data_dir={data_dir}",
                    f"--vocab_size={config.vocab.text_vocab_size}"], os.path.join(data_dir, "sentencepiece.log"))
  if names is None:
    names = ["text", "captions"] + [t for ts in domains(config).values() for t in ts]
  for i, name in enumerate(names):
    train, validation, returns = data_counts(config, name)
    study_runs.ensure_dataset(name, data_dir, train, validation or None, return_episodes=returns or None)
    logging.info("data %d/%d: %s ready", i + 1, len(names), name)


# ----------------------------------------------------------------------------------- capped references
def capped_references(config, tasks: list[str]) -> dict[str, dict]:
  """{task: expert / random returns at the cap on the evaluation seeds} for every task whose episodes
  are longer than config.study.max_steps; cached in <data_dir>/generalist_references.json."""
  from gato_jax.evaluation import datasets, rollout  # pylint: disable=g-import-not-at-top
  cap, n = int(config.study.max_steps), int(config.eval.episodes_per_task)
  data_dir = os.path.expanduser(config.data.data_dir)
  path = os.path.join(data_dir, "generalist_references.json")
  cache = json.load(open(path)) if os.path.exists(path) else {}
  out = {}
  for name in tasks:
    ds = datasets.load_control_dataset(name, data_dir)
    if not cap or ds.task.max_steps <= cap:
      continue
    source = ds
    twin = name[:-len("_pixels")] if name.endswith("_pixels") else None
    if twin and study_runs.train_episodes(twin, data_dir) is not None:
      candidate = datasets.load_control_dataset(twin, data_dir)
      if candidate.build_seed == ds.build_seed and candidate.task.max_steps == ds.task.max_steps:
        source = candidate
    key = f"{source.name}@{cap}x{n}@{ds.build_seed}"
    if key not in cache:
      start = time.perf_counter()
      seeds = rollout.evaluation_seeds(ds.build_seed, n)
      entry = {}
      for who, actor in (("expert", rollout.ExpertActor(source.task)),
                         ("random", rollout.RandomActor(source.spec, seed=int(config.eval.seed)))):
        results = rollout.run_episodes(source.task, actor, seeds, num_envs=int(config.eval.num_envs),
                                       max_steps=cap, failure_return=source.random_return)
        entry[f"{who}_returns"] = [float(r.episode_return) for r in results]
        entry[f"{who}_return"] = float(np.mean(entry[f"{who}_returns"]))
      entry.update(seconds=time.perf_counter() - start, from_task=source.name, cap=cap, seeds=list(seeds))
      cache[key] = entry
      with open(path, "w") as f:
        json.dump(cache, f, indent=1)
      logging.info("capped references %s at %d steps: expert %.2f, random %.2f (%.0f s)", name, cap,
                   entry["expert_return"], entry["random_return"], entry["seconds"])
    out[name] = dict(cache[key], data_expert_return=ds.expert_return, data_random_return=ds.random_return,
                     task_max_steps=int(ds.task.max_steps))
  return out


def rescore(entry: dict, reference: dict, config) -> dict:
  """A task's report entry scored against the capped expert / random returns."""
  from gato_jax.evaluation import scores  # pylint: disable=g-import-not-at-top
  score = scores.TaskScore(entry.get("task", "?"), entry["domain"], entry["returns"], [],
                           reference["expert_return"], reference["random_return"], entry.get("crashed_episodes", 0),
                           entry.get("seeds", []), float(config.eval.confidence), int(config.eval.bootstrap_samples))
  out = dict(entry, **score.to_dict())
  out.update(mean_length=entry.get("mean_length"), capped_at=reference["cap"],
             data_expert_return=reference["data_expert_return"], data_random_return=reference["data_random_return"])
  return out


# ----------------------------------------------------------------------------------------- evaluation
def evaluate(config, size: str, workdir: str, tasks: list[str], references: dict, language: bool) -> dict:
  """Rollout scores of the workdir's last checkpoint on `tasks` (capped ones at the cap, rescored),
  and with `language` its validation loss on text and captions. In this process."""
  from gato_jax.evaluation import offline  # pylint: disable=g-import-not-at-top
  from gato_jax.evaluation.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  c = eval_config(config, size)
  groups = [([t for t in tasks if t not in references], 0), ([t for t in tasks if t in references],
                                                              int(config.study.max_steps))]
  out, model, step = {"tasks": {}}, None, None

  def evaluator(names, cap):
    nonlocal model, step
    cc = copy.deepcopy(c)
    cc.eval.max_steps = cap
    ev = Evaluator(cc, workdir, tasks=names)
    if model is None:
      checkpoint = ev.checkpoint()
      model, step = ev.load_model(checkpoint), checkpoint.step
    return ev

  for names, cap in groups:
    if names:
      report = evaluator(names, cap).evaluate_model(model, step)
      for name, entry in report["tasks"].items():
        entry = dict(entry, task=name)
        out["tasks"][name] = rescore(entry, references[name], config) if name in references else entry
  if language and model is None:
    evaluator([], 0)
  if language:
    metrics = offline.validation_metrics(offline.model_forward(model), c, ["text", "captions"],
                                         batch_size=int(c.eval.offline_batch_size),
                                         max_batches=int(c.eval.offline_batches), seed=int(c.eval.seed))
    out["language"] = {k: {m: v[m] for m in ("loss", "text_loss", "text_accuracy", "target_tokens") if m in v}
                       for k, v in metrics.items()}
  out["eval_seconds"] = time.perf_counter() - start
  out["step"] = step
  return out


def aggregate(entries: list[dict], config) -> dict:
  """IQM of the normalised scores with its stratified bootstrap interval, the fraction above 0.5."""
  from gato_jax.evaluation import scores  # pylint: disable=g-import-not-at-top
  s = [e["normalized_score"] for e in entries]
  # iqm_interval normalises with each entry's own (possibly capped) expert / random returns.
  lo, hi = scores.iqm_interval(entries, float(config.eval.confidence), int(config.eval.bootstrap_samples))
  return {"tasks": len(s), "iqm": scores.interquartile_mean(s), "iqm_ci_low": lo, "iqm_ci_high": hi,
          "mean": float(np.mean(s)), "above_half": int(sum(x > THRESHOLD for x in s)),
          "fraction_above_half": float(np.mean([x > THRESHOLD for x in s]))}


# ------------------------------------------------------------------------------------------------ run
class Progress:
  """Phase lines with the elapsed time and an ETA from the planned work done so far."""

  def __init__(self, units: list[tuple[str, float]]):
    self.units, self.done, self.start = dict(units), 0.0, time.time()

  def finish(self, name: str, detail: str = "") -> None:
    self.done += self.units.pop(name)
    elapsed = time.time() - self.start
    left = sum(self.units.values())
    eta = elapsed / self.done * left if self.done else float("nan")
    logging.info("[generalist study] %s done%s; elapsed %.1f min, ETA %.1f min (%d phase(s) left)", name,
                 f" ({detail})" if detail else "", elapsed / 60, eta / 60, len(self.units))


def run_study(config, workdir: str, on_size=None) -> dict:
  """Every step of the module docstring; returns the JSON result (`on_size(partial result)` after each
  size but the last)."""
  started, load = time.time(), os.getloadavg()
  study_runs.use_compile_cache(workdir)
  runs_dir = os.path.join(os.path.abspath(workdir), "runs")
  shutil.rmtree(runs_dir, ignore_errors=True)
  doms, share = domains(config), shares(config)
  every = [t for ts in doms.values() for t in ts]
  ensure_data(config)
  data_seconds = time.time() - started
  logging.info("[generalist study] data ready in %.1f min: %d control tasks in %d domains, text, captions",
               data_seconds / 60, len(every), len(doms))
  references = capped_references(config, every)
  reference_seconds = time.time() - started - data_seconds
  # Planned work in train steps x model cost (large ~ 2.5x small) plus a rough evaluation weight.
  units = []
  for size in sizes(config):
    weight = 1.0 if size == sizes(config)[0] else 2.5
    steps = int(config.study[size].steps)
    units += [(f"{size}/generalist", weight * steps + 3.0 * len(every))]
    units += [(f"{size}/{d}", weight * specialist_steps(steps, share[d]) + 3.0 * len(doms.get(d, [])))
              for d in list(doms) + [LANGUAGE]]
  progress = Progress(units)
  result_sizes = {}
  result = lambda partial: _result(config, started, load, doms, share, references, result_sizes, data_seconds,
                                   reference_seconds, partial)
  for size in sizes(config):
    steps = int(config.study[size].steps)
    gen_dir = os.path.join(runs_dir, size, "generalist")
    gen = {"mixture": mixture(config), "run": study_runs.train(gen_dir, run_overrides(config, size, None, steps))}
    gen.update(evaluate(config, size, gen_dir, every, references, language=True))
    progress.finish(f"{size}/generalist", f"{gen['run']['steps']} steps in {gen['run']['train_seconds']:.0f} s, "
                    f"{len(gen['tasks'])} tasks scored in {gen['eval_seconds']:.0f} s")
    specialists = {}
    for d in list(doms) + [LANGUAGE]:
      d_steps = specialist_steps(steps, share[d])
      d_dir = os.path.join(runs_dir, size, d)
      spec = {"mixture": mixture(config, d), "share": share[d], "steps": d_steps,
              "run": study_runs.train(d_dir, run_overrides(config, size, d, d_steps))}
      spec.update(evaluate(config, size, d_dir, doms.get(d, []), references, language=d == LANGUAGE))
      specialists[d] = spec
      progress.finish(f"{size}/{d}", f"{d_steps} steps in {spec['run']['train_seconds']:.0f} s, "
                      f"eval {spec['eval_seconds']:.0f} s")
    per_domain = {}
    for d, ts in doms.items():
      per_domain[d] = {"generalist": aggregate([gen["tasks"][t] for t in ts], config),
                       "specialist": aggregate([specialists[d]["tasks"][t] for t in ts], config)}
    overall = {"generalist": aggregate([gen["tasks"][t] for t in every], config),
               "specialist": aggregate([specialists[d]["tasks"][t] for d, ts in doms.items() for t in ts],
                                       config)}
    result_sizes[size] = {"model": config.study[size].to_dict(), "steps": steps, "generalist": gen,
                          "specialists": specialists, "domains": per_domain, "overall": overall}
    if on_size is not None and size != sizes(config)[-1]:  # what is done so far, should a later size fail
      on_size(result(partial=True))
  return result(partial=False)


def _result(config, started, load, doms, share, references, result_sizes, data_seconds, reference_seconds,
            partial):
  return {
      "partial": partial,
      "domains": doms, "shares": share, "rates": rates(config), "references": references,
      "sizes": result_sizes, "config": json.loads(config.to_json_best_effort()),
      "wall_seconds": time.time() - started, "data_seconds": data_seconds,
      "reference_seconds": reference_seconds, "machine": study_runs.machine(load),
      "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
      "command": " ".join(["python", "bench/generalist.py"] + sys.argv[1:]),
  }


# ------------------------------------------------------------------------------------------- markdown
def _s(entry) -> str:
  return f"{entry['normalized_score']:.2f} [{entry['score_ci_low']:.2f}, {entry['score_ci_high']:.2f}]"


def _iqm(a) -> str:
  return f"{a['iqm']:.2f} [{a['iqm_ci_low']:.2f}, {a['iqm_ci_high']:.2f}]"


def _frac(a) -> str:
  return f"{a['above_half']}/{a['tasks']}"


def behind(result: dict) -> list[str]:
  """Sentences: where the generalist's IQM is below the specialist's, per size, with the intervals."""
  lines = []
  for size, r in result["sizes"].items():
    for d, a in r["domains"].items():
      g, s = a["generalist"], a["specialist"]
      if g["iqm"] < s["iqm"]:
        clear = g["iqm_ci_high"] < s["iqm_ci_low"]
        lines.append(f"- {size}, **{d}**: generalist IQM {_iqm(g)} below the specialist's {_iqm(s)} "
                     f"({'intervals disjoint' if clear else 'intervals overlap: not a clear gap'}); "
                     f"tasks above 0.5: {_frac(g)} vs {_frac(s)}.")
    gl, sl = r["generalist"].get("language", {}), r["specialists"][LANGUAGE].get("language", {})
    for k in ("text", "captions"):
      if k in gl and k in sl and gl[k]["loss"] > sl[k]["loss"]:
        lines.append(f"- {size}, **{k}** validation loss: generalist {gl[k]['loss']:.3f} above the language "
                     f"specialist's {sl[k]['loss']:.3f}.")
  return lines or ["- nowhere: at both sizes the generalist's IQM is at or above every specialist's."]


def pixel_rows(result: dict) -> list[str]:
  """Each image-observation control task: mean return with its interval against random, per run."""
  from gato_jax.evaluation import scores  # pylint: disable=g-import-not-at-top
  lines = ["| task | size | model | mean return [95% CI] | random | expert | score [CI] | above random |",
           "| --- | --- | --- | --- | ---: | ---: | --- | --- |"]
  doms = result["domains"]
  pixel = [t for t in (t for ts in doms.values() for t in ts)
           if t.startswith("atari_") or t.endswith("_pixels") or t.endswith("_image")]
  for t in pixel:
    d = next(d for d, ts in doms.items() if t in ts)
    for size, r in result["sizes"].items():
      for who, e in (("generalist", r["generalist"]["tasks"][t]), ("specialist", r["specialists"][d]["tasks"][t])):
        lo, hi = scores.bootstrap_interval(e["returns"], seed=0)
        lines.append(f"| {t} | {size} | {who} | {e['mean_return']:.2f} [{lo:.2f}, {hi:.2f}] | "
                     f"{e['random_return']:.2f} | {e['expert_return']:.2f} | {_s(e)} | "
                     f"{'yes' if e['score_ci_low'] > 0 else 'no'} |")
  return lines


def markdown(result: dict, discussion: str = "") -> str:
  c, doms, sizes_ = result["config"], result["domains"], result["sizes"]
  s, m = c["study"], result["machine"]
  every = [t for ts in doms.values() for t in ts]
  size_names = list(sizes_)
  lines = [
      "# Generalist vs specialists (bench/generalist.py)", "",
      *(["**Partial: the sizes after the first did not finish in this run.**", ""] if result.get("partial") else []),
      f"One model trained on **{len(every)} control tasks in {len(doms)} domains** plus text and captions "
      f"(shares: {s['control_share']:.0%} control split evenly over the tasks, {s['text_share']:.0%} text, "
      f"{s['caption_share']:.0%} captions), against one specialist per domain trained on that domain alone "
      f"for round(generalist steps x the domain's share) steps at the same batch ({c['batch_size']} x "
      f"{c['data']['sequence_length']} tokens): the specialists together spend the generalist's compute. "
      "Text and captions have a specialist of their own (\"language\").", "",
      "Sizes: " + "; ".join(f"**{n}** {r['model']['num_layers']} layers x {r['model']['embed_dim']} wide "
                           f"({r['model']['num_heads']} heads, MLP {r['model']['mlp_dim']}), {r['steps']} steps"
                           for n, r in sizes_.items()) + ".", "",
      f"Scores: expert-normalised return, (R - random) / (expert - random), over "
      f"{c['eval']['episodes_per_task']} sampled (temperature {c['eval']['temperature']}), demo-prompted "
      f"rollouts a task on unseen seeds, {int(c['eval']['confidence'] * 100)}% bootstrap intervals; per domain "
      f"the IQM over its tasks with a stratified bootstrap interval, and the tasks above 0.5 of expert. "
      f"Episodes are capped at {s['max_steps']} steps; the {len(result['references'])} capped tasks "
      f"({', '.join(sorted(result['references']))}) are scored against their scripted expert and the random "
      "policy rolled out at the same cap on the same seeds.", "",
      f"Machine: {m['platform']} ({m['cpus']} cores, shared), jax {m['jax']} on {m['backend']} "
      f"({m['devices']} device(s)); load average {m['load_average_start'][0]:.1f} at start, "
      f"{m['load_average_end'][0]:.1f} at the end. Wall time {result['wall_seconds'] / 60:.1f} min "
      f"(data {result['data_seconds'] / 60:.1f} min, capped references {result['reference_seconds'] / 60:.1f} "
      f"min; {result['date_utc']} UTC).", "",
      f"Rerun: `nice -n 10 {result.get('command', 'python bench/generalist.py --config experiments/generalist_study.py')}`", "",
      "## Per domain: IQM of expert-normalised scores [95% CI], tasks above 0.5", "",
      "| domain | tasks | share | " + " | ".join(f"{n}: generalist | {n}: specialist (steps)" for n in size_names) + " |",
      "| --- | ---: | ---: | " + " | ".join("--- | ---" for _ in size_names) + " |",
  ]
  for d, ts in doms.items():
    cells = []
    for n in size_names:
      a = sizes_[n]["domains"][d]
      cells.append(f"{_iqm(a['generalist'])}, {_frac(a['generalist'])} | {_iqm(a['specialist'])}, "
                   f"{_frac(a['specialist'])} ({sizes_[n]['specialists'][d]['steps']})")
    lines.append(f"| {d} | {len(ts)} | {result['shares'][d]:.3f} | " + " | ".join(cells) + " |")
  cells = [f"{_iqm(sizes_[n]['overall']['generalist'])}, {_frac(sizes_[n]['overall']['generalist'])} | "
           f"{_iqm(sizes_[n]['overall']['specialist'])}, {_frac(sizes_[n]['overall']['specialist'])}"
           for n in size_names]
  lines.append(f"| **all** | {len(every)} | {sum(result['shares'][d] for d in doms):.3f} | " + " | ".join(cells) + " |")
  lines += ["", "## Text and captions: validation loss (per target token)", "",
            "| size | model | steps | text loss | captions loss |", "| --- | --- | ---: | ---: | ---: |"]
  for n in size_names:
    for who, r in (("generalist", sizes_[n]["generalist"]), ("language specialist", sizes_[n]["specialists"][LANGUAGE])):
      lang = r.get("language", {})
      steps = r["run"]["steps"]
      lines.append(f"| {n} | {who} | {steps} | {_f(lang.get('text', {}).get('loss'))} | "
                   f"{_f(lang.get('captions', {}).get('loss'))} |")
  lines += ["", "## Where the generalist falls behind", ""] + behind(result)
  if discussion:
    lines += ["", discussion.strip()]
  lines += ["", "## Pixels that steer: image-observation tasks against random", "",
            "Atari: compact frames (84x84 resized, padded to 96x96: 36 patches a step); dm_control cartpole "
            "swing-up: the 64x64 camera frame only (no state); BabyAI: the 64x64 rendered agent view. "
            "\"above random\" = the score's interval excludes 0 (the random policy).", ""]
  lines += pixel_rows(result)
  lines += ["", "## Every task: expert-normalised score [95% CI]", "",
            "| task | domain | " + " | ".join(f"{n}: generalist | {n}: specialist" for n in size_names) + " |",
            "| --- | --- | " + " | ".join("--- | ---" for _ in size_names) + " |"]
  for d, ts in doms.items():
    for t in ts:
      cells = [f"{_s(sizes_[n]['generalist']['tasks'][t])} | {_s(sizes_[n]['specialists'][d]['tasks'][t])}"
               for n in size_names]
      cap = " (capped)" if t in result["references"] else ""
      lines.append(f"| {t}{cap} | {d} | " + " | ".join(cells) + " |")
  lines += ["", "## Runs", "", "| size | run | steps | final loss | action acc. | train s | eval s |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for n in size_names:
    runs = [("generalist", sizes_[n]["generalist"])] + list(sizes_[n]["specialists"].items())
    for name, r in runs:
      lines.append(f"| {n} | {name} | {r['run']['steps']} | {_f(r['run']['final_loss'])} | "
                   f"{_f(r['run']['final_action_accuracy'])} | {r['run']['train_seconds']:.0f} | "
                   f"{r['eval_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def _f(x) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  doms = list(result["domains"]) + ["all"]
  size_names = list(result["sizes"])
  fig, axes = plt.subplots(1, len(size_names), figsize=(6 * len(size_names), 4), sharey=True, squeeze=False)
  x = np.arange(len(doms))
  for ax, n in zip(axes[0], size_names):
    r = result["sizes"][n]
    for k, (who, color) in enumerate((("generalist", "tab:blue"), ("specialist", "tab:orange"))):
      aggs = [r["domains"][d][who] if d != "all" else r["overall"][who] for d in doms]
      y = np.array([a["iqm"] for a in aggs])
      err = np.array([[a["iqm"] - a["iqm_ci_low"] for a in aggs], [a["iqm_ci_high"] - a["iqm"] for a in aggs]])
      ax.bar(x + (k - 0.5) * 0.38, y, 0.38, yerr=np.maximum(err, 0), capsize=3, color=color,
             label=who if who == "generalist" else "specialist per domain")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.axhline(1, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xticks(x)
    ax.set_xticklabels(doms, rotation=20)
    ax.set_title(f"{n}: {r['model']['num_layers']} layers x {r['model']['embed_dim']}, {r['steps']} steps")
    ax.grid(alpha=0.3, axis="y")
  axes[0][0].set_ylabel("IQM expert-normalised score [95% CI]")
  axes[0][0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(result: dict, out: str, discussion: str = "") -> dict[str, str]:
  text = markdown(result, discussion)
  files = results_io.write_results(out, "generalist", result, text, echo=False)
  files["png"] = os.path.join(out, "generalist.png")
  plot(result, files["png"])
  return files


def main(argv) -> None:
  config = study_runs.study_config(argv, "study", "experiments/generalist_study.py")
  if _RENDER_ONLY.value:
    with open(os.path.join(_OUT.value, "generalist.json")) as f:
      result = json.load(f)
  else:
    on_size = lambda partial: write(partial, _OUT.value, str(config.study.discussion))
    result = run_study(config, _WORKDIR.value or DEFAULT_WORKDIR, on_size)
  files = write(result, _OUT.value, str(config.study.discussion))
  print(markdown(result, str(config.study.discussion)), flush=True)
  print(f"Wrote {', '.join(files.values())}", flush=True)


if __name__ == "__main__":
  cli_flags.isolate_caches()
  app.run(main, flags_parser=cli_flags.parse_flags)
