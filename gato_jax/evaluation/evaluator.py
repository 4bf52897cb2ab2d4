"""gato-eval's runner: one checkpoint (or every new one of a running training, `watch`) through the
evaluators `config.evals` chooses (gato_jax/evaluation/registry.py), into one report.

Checkpoints are read from `<workdir>/checkpoints/<step>` (gato_jax/evaluation/checkpoints.py), params
only, onto one device whatever mesh trained them.
"""

import time
from typing import Any, Optional, Sequence

from absl import logging

from gato_jax.evaluation import registry, replay, report as report_lib, scores
from gato_jax.evaluation.checkpoints import (Checkpoint, committed_checkpoints, find_checkpoint,  # pylint: disable=unused-import
                                             load_model, log_skipped)
from gato_jax.evaluation.context import EvalContext


class Evaluator:
  """Evaluates Gato checkpoints of one workdir with one config's evaluators."""

  def __init__(self, config, workdir: str, *, tasks: Optional[Sequence[str]] = None, load_data: bool = True):
    self.context = EvalContext(config, workdir, tasks=tasks, load_data=load_data)
    self.config, self.workdir = self.context.config, self.context.workdir
    self.task_names, self.offline_only = self.context.task_names, self.context.offline_only
    self.datasets = self.context.datasets
    self.evaluators = registry.build(self.context)

  @property
  def actor_for(self):
    return self.context.actor_for

  @actor_for.setter
  def actor_for(self, make_actor):
    self.context.actor_for = make_actor

  def load_model(self, checkpoint: Checkpoint):
    return load_model(self.config, self.context.layout, checkpoint, self.workdir)

  def evaluate_model(self, model, step: int, checkpoint_path: str = "") -> dict:
    """Every evaluator of config.evals for `model`; writes the report files and returns the report.
    `model` None: rollouts only, acted by `actor_for` (a served checkpoint)."""
    start = time.perf_counter()
    report: dict[str, Any] = {"step": int(step), "checkpoint": checkpoint_path, "workdir": self.workdir,
                              "eval_config": self.config.eval.to_dict(), "tasks": {}}
    enabled = [e for e in self.evaluators if e.enabled() and (model is not None or e.report_key == "tasks")]
    control = [e for e in enabled if e.report_key == "tasks"]
    for evaluator in control:  # first: their GIFs render in a child process while the others run
      report["tasks"].update(evaluator.run(model, step))
    gif_job = replay.GifJob([gif for e in control for gif in e.gif_requests])
    if report["tasks"]:  # none when every task is imported without a simulator (offline only)
      report["summary"] = scores.summarize(report["tasks"])
    for evaluator in enabled:
      if evaluator not in control:
        report.setdefault(evaluator.report_key, {}).update(evaluator.run(model, step))
    report["gifs"] = {k: v for k, v in gif_job.wait().items() if v}
    report["seconds"] = time.perf_counter() - start
    report_lib.write_report(report, self.workdir)
    return report

  def checkpoint(self, step=None) -> Checkpoint:
    """The checkpoint of `step` (an int, "best", or None: the latest), with a clear error when there is
    none."""
    return find_checkpoint(self.workdir, step)

  def evaluate_checkpoint(self, step=None) -> dict:
    checkpoint = self.checkpoint(step)
    logging.info("Evaluating %s (step %d) on %s", checkpoint.path, checkpoint.step, ", ".join(self.task_names))
    return self.evaluate_model(self.load_model(checkpoint), checkpoint.step, checkpoint.path)

  def watch(self, interval_s: float, timeout_s: float = 0.0, final_step: Optional[int] = None,
            on_report=None) -> list[int]:
    """Evaluates every checkpoint not evaluated yet, oldest first, as training writes them; returns the
    steps evaluated. Stops after `final_step` is evaluated, or after `timeout_s` without a new one."""
    done = {r["step"] for r in report_lib.load_history(self.workdir)}
    evaluated: list[int] = []
    last_new = time.monotonic()
    reported: set = set()
    while True:
      reported |= set(log_skipped(self.workdir, reported))
      pending = [c for c in committed_checkpoints(self.workdir) if c.step not in done]
      for checkpoint in pending:
        last_new = time.monotonic()
        try:
          model = self.load_model(checkpoint)
        except FileNotFoundError as e:  # deleted by the keep policy before we got to it
          logging.warning("Checkpoint %s vanished before it could be read (%s); skipping it.", checkpoint.path, e)
          done.add(checkpoint.step)
          continue
        result = self.evaluate_model(model, checkpoint.step, checkpoint.path)
        done.add(checkpoint.step)
        evaluated.append(checkpoint.step)
        if on_report is not None:
          on_report(result)
      if final_step is not None and final_step in done:
        return evaluated
      if timeout_s and time.monotonic() - last_new > timeout_s:
        logging.info("No new checkpoint in %s for %.0f s; stopping.", self.workdir, timeout_s)
        return evaluated
      time.sleep(interval_s)
