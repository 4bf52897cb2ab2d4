"""The `offline` evaluator: per-task loss and action accuracy on the validation splits, for a checkpoint
(gato-eval, a model on one device) or for the training's own sharded params on the global mesh.

Validation batches come through the same SeqIO preprocessing as training
(`gato_jax.data.make_eval_dataset`: tokenized, windowed, prompted as configured, seeded, unshuffled)
and are scored by the model's own `loss_and_metrics`, so the numbers are comparable to training logs.

During a multi-process training every process reads the same batches and feeds its own rows of each
to the same jitted forward on the global mesh, so every process makes the same collectives in the
same order and gets the same (replicated) numbers.
"""

import functools
import math
from typing import Any, Callable, Sequence

from absl import logging
from flax import nnx
import jax
import numpy as np

from gato_jax import partitioning
from gato_jax.data import make_eval_dataset
from gato_jax.evaluation.context import EvalContext
from gato_jax.evaluation.options import EvalSpec
from gato_jax.features import INPUT_FEATURES
from gato_jax.model import loss_and_metrics
from gato_jax.model.metrics import reduce_metrics

_WEIGHTS = {"loss": "num_targets", "text_loss": "num_text_targets", "action_loss": "num_action_targets",
            "text_accuracy": "num_text_targets", "action_accuracy": "num_action_targets"}
SCALARS = ("loss", "action_accuracy", "text_accuracy")
NEEDED = set(INPUT_FEATURES) | {"targets", "target_kinds", "loss_mask"}


def _model_metrics(graphdef, state, batch):
  return loss_and_metrics(nnx.merge(graphdef, state)(batch), batch)[1]


def _sharded_metrics(model_def, params, model_state, batch):
  # Deterministic forward (train=False): the rng only fills the template of the model's streams.
  return loss_and_metrics(model_def.merge(params, jax.random.key(0), model_state)(batch), batch)[1]


def model_forward(model) -> Callable[[dict], dict]:
  """batch -> metrics of a model on one device (gato-eval)."""
  graphdef, state = nnx.split(model)
  step = jax.jit(functools.partial(_model_metrics, graphdef))
  return lambda batch: step(state, batch)


def validation_batches(config, name: str, *, batch_size: int, max_batches: int = 0, seed: int = 0):
  """The task's validation batches (the features the forward needs), as numpy."""
  ds = make_eval_dataset(config, name, "validation", batch_size=batch_size, seed=seed)
  if max_batches:
    ds = ds.take(max_batches)
  return ({k: v for k, v in batch.items() if k in NEEDED} for batch in ds.as_numpy_iterator())


def validation_metrics(forward: Callable[[dict], dict], config, task_names: Sequence[str], *, batch_size: int,
                       max_batches: int = 0, seed: int = 0, batches=validation_batches) -> dict[str, dict]:
  """{task: loss, action_accuracy, ... averaged over the target tokens of the validation split};
  `batches` reads them (validation_batches' signature)."""
  out = {}
  for name in task_names:
    parts = [jax.device_get(forward(batch))
             for batch in batches(config, name, batch_size=batch_size, max_batches=max_batches, seed=seed)]
    if not parts:
      logging.warning("offline evaluation of %s: the validation split gave no batch", name)
      continue
    keys = set(_WEIGHTS) | set(_WEIGHTS.values())
    stacked = {key: np.array([float(m[key]) for m in parts]) for key in keys}
    reduced = reduce_metrics(stacked, {key: stacked[weight] for key, weight in _WEIGHTS.items()}, xp=np)
    metrics = {key: float(reduced[key]) for key in _WEIGHTS}
    metrics.update({"target_tokens": int(reduced["num_targets"]),
                    "action_tokens": int(reduced["num_action_targets"]),
                    "text_tokens": int(reduced["num_text_targets"]), "batches": len(parts)})
    if not reduced["num_text_targets"]:
      metrics.pop("text_loss"), metrics.pop("text_accuracy")
    if not reduced["num_action_targets"]:
      metrics.pop("action_loss"), metrics.pop("action_accuracy")
    out[name] = metrics
  return out


class OfflineEvaluator:
  """Validation metrics of every task evaluated (config.eval.offline=False: only of the tasks that
  have no simulator, which get nothing else)."""
  report_key = "offline"

  def __init__(self, spec: EvalSpec, context: EvalContext):
    self.spec, self.context = spec, context
    self._sharded = None  # the jitted forward on the training's mesh, compiled once
    # Training evaluates the same batches again and again: read once (a bounded number of them), not
    # rebuilt through SeqIO at every evaluation.
    self._cached: dict[str, list] = {}

  def tasks(self) -> list[str]:
    return self.context.task_names if self.spec.options.offline else self.context.offline_only

  def enabled(self) -> bool:
    return bool(self.tasks())

  def _metrics(self, forward, batch_size: int, batches=validation_batches) -> dict[str, Any]:
    e = self.spec.options
    return validation_metrics(forward, self.context.config, self.tasks(), batch_size=batch_size,
                              max_batches=e.offline_batches, seed=e.seed, batches=batches)

  def _cached_batches(self, config, name: str, **kwargs):
    if not kwargs["max_batches"]:  # the whole split: read it each time rather than hold it
      return validation_batches(config, name, **kwargs)
    if name not in self._cached:
      self._cached[name] = list(validation_batches(config, name, **kwargs))
    return self._cached[name]

  def run(self, model, step: int) -> dict[str, Any]:
    del step
    return self._metrics(model_forward(model), self.spec.options.offline_batch_size)

  def run_sharded(self, step: int, *, params, model_state, model_def, mesh) -> dict[str, Any]:
    """The training's params where they are (collective-safe: module docstring)."""
    del step
    # The global batch splits over data x fsdp and over the processes: rounded up to fit both.
    unit = math.lcm(partitioning.data_parallel_size(mesh), jax.process_count())
    size = -(-self.spec.options.offline_batch_size // unit) * unit
    if self._sharded is None:
      self._sharded = jax.jit(functools.partial(_sharded_metrics, model_def),
                              out_shardings=partitioning.replicated(mesh))
    rows = size // jax.process_count()
    first = jax.process_index() * rows

    def forward(batch):
      local = {k: v[first:first + rows] for k, v in batch.items()}
      with partitioning.axis_rules(mesh, partitioning.rules_from_config(self.context.config.mesh)):
        return self._sharded(params, model_state, partitioning.global_batch(local, mesh, size))
    return self._metrics(forward, size, self._cached_batches)

  def scalars(self, section: dict[str, Any]) -> dict[str, float]:
    """`<name>/<task>/<metric>` and each metric's mean over the tasks that have it, `<name>/<metric>`."""
    out = {}
    for key in SCALARS:
      values = {task: m[key] for task, m in section.items() if key in m}
      out.update({f"{self.spec.name}/{task}/{key}": float(v) for task, v in values.items()})
      if values:
        out[f"{self.spec.name}/{key}"] = float(np.mean(list(values.values())))
    return out
