"""Evaluation reports in `workdir/eval/`: JSON, a markdown table, TensorBoard scalars, a PNG plot, GIFs.

  report.json          the latest evaluated checkpoint (per task: normalized_score, its interval,
                       mean_return, expert_return, random_return, episodes, ...; summary; offline)
  report.md            the same as markdown tables (what gato-eval prints)
  steps/step_N.json    one report per evaluated checkpoint: the history behind the plot
  scores.png           score per task (latest checkpoint, with intervals) and over training steps
  gifs/<task>.gif      one rollout per task (rendered by replay.py)
and TensorBoard scalars (eval/<task>/normalized_score, ...) at the checkpoint's step in
<workdir>/tensorboard/eval, beside the training's own event files.
"""

import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, "eval")


def _fmt(x, digits: int = 2) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f"{x:.{digits}f}"


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, default=_json_default, allow_nan=True)
  os.replace(tmp, path)  # readers (a watching user, the Makefile) never see half a file


def markdown(report: Mapping[str, Any]) -> str:
  """Markdown tables of an evaluation report (online scores, domains, offline metrics, captions)."""
  lines = [f"# Evaluation of step {report.get('step', '?')}", ""]
  if report.get("checkpoint"):
    lines += [f"Checkpoint: `{report['checkpoint']}`", ""]
  tasks = report.get("tasks", {})
  if tasks:
    conf = int(round(100 * next(iter(tasks.values())).get("confidence", 0.95)))
    lines += [f"| task | domain | score | {conf}% CI | mean return | expert | random | episodes | crashed |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in sorted(tasks.items()):
      lines.append(f"| {name} | {t['domain']} | {_fmt(t['normalized_score'])} | "
                   f"[{_fmt(t['score_ci_low'])}, {_fmt(t['score_ci_high'])}] | {_fmt(t['mean_return'], 1)} | "
                   f"{_fmt(t['expert_return'], 1)} | {_fmt(t['random_return'], 1)} | {t['episodes']} | "
                   f"{t.get('crashed_episodes', 0)} |")
    s = report["summary"]
    above = s["tasks_above"]
    lines += ["", "| domain | tasks | mean score | IQM | " + " | ".join(f"> {float(k):.0%}" for k in above) + " |",
              "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in above) + " |"]
    for d, ds in s["domains"].items():
      lines.append(f"| {d} | {ds['tasks']} | {_fmt(ds['mean_normalized_score'])} | "
                   f"{_fmt(ds['iqm_normalized_score'])} | " + " | ".join(str(v) for v in ds["tasks_above"].values())
                   + " |")
    lines.append(f"| **all** | {s['num_tasks']} | {_fmt(s['mean_normalized_score'])} | "
                 f"{_fmt(s['iqm_normalized_score'])} | " + " | ".join(str(v) for v in above.values()) + " |")
    lines += ["", "Score: (mean return - random) / (expert - random); 0 = random policy, 1 = the data's "
              "expert. Interval: percentile bootstrap over episodes."]
  offline = report.get("offline", {})
  if offline:
    lines += ["", "| task (validation split) | loss | action accuracy | text accuracy | target tokens |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, m in sorted(offline.items()):
      lines.append(f"| {name} | {_fmt(m.get('loss'), 3)} | {_fmt(m.get('action_accuracy'), 3)} | "
                   f"{_fmt(m.get('text_accuracy'), 3)} | {m.get('target_tokens', 'n/a')} |")
  captions = report.get("captions", {})
  if captions.get("modes"):
    lines += ["", "| captions | attribute match | exact match | examples |", "| --- | ---: | ---: | ---: |"]
    for mode, m in captions["modes"].items():
      lines.append(f"| {mode} | {_fmt(m['attribute_match'])} | {_fmt(m['exact_match'])} | {m['examples']} |")
    for example in captions.get("examples", [])[:3]:
      lines.append(f"\n- truth: \"{example['truth']}\" — greedy: \"{example['greedy']}\"")
  files = report.get("files", {})
  if files:
    lines += ["", "Files: " + ", ".join(f"{k} `{v}`" for k, v in files.items() if v)]
  return "\n".join(lines) + "\n"


def load_history(workdir: str) -> list[dict]:
  """Every per-step report written so far, by step."""
  directory = os.path.join(eval_dir(workdir), "steps")
  if not os.path.isdir(directory):
    return []
  out = []
  for name in sorted(os.listdir(directory)):
    if name.startswith("step_") and name.endswith(".json"):
      with open(os.path.join(directory, name)) as f:
        out.append(json.load(f))
  return sorted(out, key=lambda r: r.get("step", 0))


def plot_scores(report: Mapping[str, Any], history: list, path: str) -> Optional[str]:
  """Left: score per task with its interval at this step; right: score per task over training steps."""
  tasks = report.get("tasks", {})
  if not tasks:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top  # the plot only; slow import
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = sorted(tasks)
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
  scores = np.array([tasks[n]["normalized_score"] for n in names])
  low = np.array([tasks[n]["score_ci_low"] for n in names])
  high = np.array([tasks[n]["score_ci_high"] for n in names])
  x = np.arange(len(names))
  left.bar(x, scores, color="tab:blue", alpha=0.8)
  left.errorbar(x, scores, yerr=[np.maximum(scores - low, 0), np.maximum(high - scores, 0)], fmt="none",
                ecolor="black", capsize=3)
  for level, style in ((1.0, "-"), (0.8, "--"), (0.5, ":"), (0.0, "-")):
    left.axhline(level, color="grey", linestyle=style, linewidth=0.8)
  left.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  left.set_ylabel("expert-normalised score")
  left.set_title(f"step {report.get('step', '?')}")
  for n in names:
    points = [(r["step"], r["tasks"][n]["normalized_score"]) for r in history if n in r.get("tasks", {})]
    if points:
      steps, values = zip(*points)
      right.plot(steps, values, marker="o", label=n)
  right.axhline(1.0, color="grey", linewidth=0.8)
  right.axhline(0.0, color="grey", linewidth=0.8)
  right.set_xlabel("training step")
  right.set_title("score over training")
  right.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_tensorboard(report: Mapping[str, Any], logdir: str) -> str:
  """Scalars of the report at its step: online scores and returns, summary, offline metrics."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top  # TensorBoard only
  step = int(report.get("step", 0))
  writer = SummaryWriter(logdir)
  try:
    for name, t in report.get("tasks", {}).items():
      for key in ("normalized_score", "mean_return", "score_ci_low", "score_ci_high"):
        writer.add_scalar(f"eval/{name}/{key}", t[key], step)
    summary = report.get("summary")
    if summary:
      writer.add_scalar("eval/mean_normalized_score", summary["mean_normalized_score"], step)
      writer.add_scalar("eval/iqm_normalized_score", summary["iqm_normalized_score"], step)
      for threshold, count in summary["tasks_above"].items():
        writer.add_scalar(f"eval/tasks_above_{threshold}", count, step)
      for domain, d in summary["domains"].items():
        writer.add_scalar(f"eval/domain/{domain}/mean_normalized_score", d["mean_normalized_score"], step)
    for name, m in report.get("offline", {}).items():
      for key, value in m.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          writer.add_scalar(f"offline/{name}/{key}", value, step)
    for mode, m in report.get("captions", {}).get("modes", {}).items():
      writer.add_scalar(f"captions/{mode}/attribute_match", m["attribute_match"], step)
      writer.add_scalar(f"captions/{mode}/exact_match", m["exact_match"], step)
  finally:
    writer.close()
  return logdir


def write_report(report: dict, workdir: str) -> dict:
  """Writes every artefact of one evaluated checkpoint; returns {what: path} (also in report.json).

  GIFs are rendered beforehand (replay.py) and listed in `report["gifs"]` as {task: path}.
  """
  directory = eval_dir(workdir)
  files: dict[str, Optional[str]] = {f"gif:{task}": path for task, path in report.get("gifs", {}).items()}
  step = int(report.get("step", 0))
  write_json(os.path.join(directory, "steps", f"step_{step:09d}.json"), report)
  files["plot"] = plot_scores(report, load_history(workdir), os.path.join(directory, "scores.png"))
  # Beside the training's event files (<workdir>/tensorboard), so one TensorBoard shows both runs.
  files["tensorboard"] = write_tensorboard(report, os.path.join(workdir, "tensorboard", "eval"))
  files["json"] = os.path.join(directory, "report.json")
  files["markdown"] = os.path.join(directory, "report.md")
  report["files"] = {k: v for k, v in files.items() if v}
  write_json(files["json"], report)
  with open(files["markdown"], "w") as f:
    f.write(markdown(report))
  return report["files"]
