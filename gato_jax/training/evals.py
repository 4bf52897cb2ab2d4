"""Evaluation during training: the evaluators the entry point built (gato_jax/evaluation/in_training.py;
training never imports evaluation), run when due, their scalars written to TensorBoard
(`<workdir>/tensorboard/evals`) and to `<workdir>/evals.jsonl`, handed to the checkpoint save (the
best-checkpoint metric), and a warning when validation loss keeps rising while training loss falls.

An evaluator is any object with `name`, `due(step, last) -> bool` and
`__call__(step, *, params, model_state, model_def, mesh) -> {scalar name: value}`; every process calls
the same ones at the same steps (they may run collectives).
"""

import json
import os
import time
from typing import Any, Mapping, Protocol, Sequence

from absl import logging
from clu import metric_writers
import jax


class StepEvaluator(Protocol):
  name: str

  def due(self, step: int, last: bool) -> bool: ...

  def __call__(self, step: int, *, params, model_state, model_def, mesh) -> dict[str, float]: ...


class MemorisingWatch:
  """Names the tasks whose validation loss (`<evaluator>/<task>/loss`) rose at each of the last
  `patience` evaluations while the training loss fell over the same evaluations."""

  def __init__(self, patience: int):
    self.patience = patience
    self._history: list[tuple[float, dict[str, float]]] = []  # (training loss, {task: validation loss})

  def update(self, train_loss: float | None, scalars: Mapping[str, float]) -> list[str]:
    losses = {key.split("/")[1]: value for key, value in scalars.items()
              if key.count("/") == 2 and key.endswith("/loss")}
    if self.patience <= 0 or train_loss is None or not losses:
      return []
    self._history = (self._history + [(float(train_loss), losses)])[-(self.patience + 1):]
    if len(self._history) <= self.patience:
      return []
    (train_first, _), (train_last, _) = self._history[0], self._history[-1]
    if not train_last < train_first:
      return []
    rising = []
    for task in losses:
      series = [h[1].get(task) for h in self._history]
      if None not in series and all(a < b for a, b in zip(series, series[1:])):
        rising.append(task)
        logging.warning(
            "Validation loss of %s has risen for %d evaluations (%.4f -> %.4f) while the training loss fell "
            "(%.4f -> %.4f): the model is memorising its training episodes; train on more episodes or for "
            "fewer steps.", task, self.patience, series[0], series[-1], train_first, train_last)
    return rising


class TrainingEvals:
  """Runs the due evaluators after a step and records what they return (module docstring)."""

  def __init__(self, evaluators: Sequence[StepEvaluator], workdir: str | None, *, memorising_patience: int = 3):
    self.evaluators = list(evaluators)
    self.memorising = MemorisingWatch(memorising_patience)
    self._writer, self._jsonl = None, None
    if self.evaluators and workdir and jax.process_index() == 0:
      self._writer = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard", "evals"))
      self._jsonl = os.path.join(workdir, "evals.jsonl")

  def run(self, step: int, *, params, model_state, model_def, mesh, last: bool,
          train_loss: float | None) -> dict[str, float] | None:
    """The scalars of the evaluators due after `step` (None when none is)."""
    due = [e for e in self.evaluators if e.due(step, last)]
    if not due:
      return None
    scalars: dict[str, Any] = {}
    for evaluator in due:
      start = time.perf_counter()
      scalars.update(evaluator(step, params=params, model_state=model_state, model_def=model_def, mesh=mesh))
      seconds = time.perf_counter() - start
      scalars[f"{evaluator.name}/seconds"] = seconds
      logging.info("Evaluation %s at step %d took %.1f s.", evaluator.name, step, seconds)
    self.memorising.update(train_loss, scalars)
    if self._writer is not None:
      self._writer.write_scalars(step, scalars)
      self._writer.flush()
      with open(self._jsonl, "a") as f:
        f.write(json.dumps({"step": step, "train/loss": train_loss, **scalars}) + "\n")
    shown = " | ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.count("/") == 1
                       and not k.endswith("/seconds"))
    if jax.process_index() == 0 and shown:
      print(f"step {step} eval | {shown}", flush=True)
    return scalars

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
