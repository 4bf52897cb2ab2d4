"""The training loop: mesh, sharded state, restore-or-init, jitted steps, logging, checkpoints, preemption.

`train(config, workdir)` is what `gato-train` runs; tests call it with a small model and synthetic
data. Every process runs the same loop on its own slice of the global batch.

Host/device overlap: the loop never waits for a step it has just dispatched. The finiteness of step s
is checked after step s + 1 is queued, and metrics are fetched only at log steps.
"""

import dataclasses
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

from gato_jax import checkpointing, features, partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import flops, logger, optimizer, state as state_lib, step as step_lib
from gato_jax.training.synthetic import SyntheticIterator

ON_NONFINITE = ("stop", "skip")
START_BARRIER_TIMEOUT_S = 1800


class ConfigError(ValueError):
  """A training setting the loop cannot honour; the message names the config key."""


class NonFiniteError(FloatingPointError):
  """A step produced a non-finite loss or gradient and `on_nonfinite="stop"`."""

  def __init__(self, step: int, tasks: dict[str, int]):
    self.step, self.tasks = step, tasks
    listed = ", ".join(f"{name} ({n} rows)" for name, n in sorted(tasks.items())) or "unknown"
    super().__init__(f"non-finite loss or gradient at step {step}; tasks in the batch: {listed}. "
                     "The update was not applied; the last checkpoint is clean. Set "
                     "--config.on_nonfinite=skip to skip such steps instead.")


@dataclasses.dataclass
class TrainResult:
  state: state_lib.TrainState
  step: int
  preempted: bool = False
  last_metrics: dict[str, float] | None = None


def default_model_fn(config, layout: VocabLayout) -> state_lib.ModelFn:
  from gato_jax.model import Gato  # pylint: disable=g-import-not-at-top
  return lambda rngs: Gato(config.model, layout, rngs)


def make_data_iterator(config, layout: VocabLayout, split: str = "train"):
  """(iterator over this process's slice of the global batch, task names in task_index order), from
  the SeqIO mixture `config.data.mixture` or synthetic features when it is "synthetic"."""
  if config.data.mixture == "synthetic":
    iterator = SyntheticIterator(
        layout, config.batch_size, config.data.sequence_length, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        patch_size=config.model.patch_size, num_patch_positions=config.model.num_patch_positions,
        max_obs_positions=config.model.max_obs_positions,
        max_image_tokens=config.model.get("max_image_tokens", -1))
    return iterator, list(iterator.task_names)
  from gato_jax import data  # pylint: disable=g-import-not-at-top  # TensorFlow + SeqIO
  iterator = data.make_iterator(config, split, jax.process_index(), jax.process_count(), config.seed)
  return iterator, data.task_names(data.get_mixture(config.data.mixture))


def check_config(config) -> None:
  """Refuses settings the loop cannot honour, naming the key."""
  for key in ("num_train_steps", "checkpoint_every_steps", "log_every_steps", "batch_size"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key}={config[key]} must be positive")
  if config.on_nonfinite not in ON_NONFINITE:
    raise ConfigError(f"config.on_nonfinite={config.on_nonfinite!r} must be one of {ON_NONFINITE}")
  if config.optimizer.grad_accum_steps < 1:
    raise ConfigError(f"config.optimizer.grad_accum_steps={config.optimizer.grad_accum_steps} must be >= 1")
  if config.optimizer.decay_factor < 1:
    raise ConfigError(f"config.optimizer.decay_factor={config.optimizer.decay_factor} must be >= 1")


def _task_counts(task_index: np.ndarray, task_names) -> dict[str, int]:
  ids, counts = np.unique(np.asarray(task_index), return_counts=True)
  name = lambda i: task_names[i] if task_names is not None and 0 <= i < len(task_names) else f"task {i}"
  return {name(int(i)): int(n) for i, n in zip(ids, counts)}


def train(config, workdir: str, *, model_fn: state_lib.ModelFn | None = None,
          loss_fn: step_lib.LossFn = step_lib.gato_loss, data_iterator=None,
          task_names=None, stop_after_steps: int | None = None,
          on_step: Callable[[int], None] | None = None, devices=None) -> TrainResult:
  """Trains to `config.num_train_steps`, resuming from `<workdir>/checkpoints` when it has any.

  `data_iterator` (with `task_names`, for reports) replaces the one `config.data` describes;
  `stop_after_steps` ends this call early (for tests and staged runs) without changing the schedule;
  `on_step(step)` runs after every dispatched step (tests use it to inject failures); `devices`
  restricts the mesh to some devices (default: every device of every process).
  """
  check_config(config)
  layout = VocabLayout.from_config(config.vocab)
  mesh = partitioning.make_mesh(config.mesh, devices)
  partitioning.check_batch_size(config.batch_size, mesh, config.optimizer.grad_accum_steps)
  model_fn = model_fn or default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  schedule = optimizer.learning_rate_schedule(config.optimizer, config.num_train_steps)
  abstract_state = state_lib.abstract_train_state(model_fn, tx, mesh, model_def)

  is_primary = jax.process_index() == 0
  if is_primary:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  if data_iterator is None:
    iterator, task_names = make_data_iterator(config, layout)
  else:
    iterator = data_iterator
    task_names = task_names if task_names is not None else getattr(data_iterator, "task_names", None)
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), every_steps=config.checkpoint_every_steps,
      keep_last=config.checkpoint.keep_last, keep_every=config.checkpoint.keep_every,
      async_save=config.checkpoint.async_save)
  restore_iterator = iterator if config.checkpoint.restore_data_iterator else None
  state, step = ckpt.restore_latest(abstract_state, data_iterator=restore_iterator)
  if state is None:
    state, step = state_lib.create_train_state(model_fn, tx, mesh, model_def, config.seed), 0
    logging.info("Initialised a new train state.")
  else:
    logging.info("Resumed from step %d.", step)
  total_params, non_embedding = flops.param_counts(model_def)
  logging.info("Model: %d parameters (%d non-embedding); mesh %s over %d devices in %d process(es).",
               total_params, non_embedding, dict(mesh.shape), mesh.size, jax.process_count())

  length = config.data.sequence_length
  metrics_logger = logger.MetricsLogger(
      workdir if is_primary else None, num_train_steps=config.num_train_steps,
      tokens_per_step=config.batch_size * length,
      flops_per_step=flops.train_flops_per_step(model_def, config.model, layout.vocab_size,
                                                config.batch_size, length),
      peak_flops=flops.peak_flops_per_device(config.model.dtype, config.get("peak_flops_per_device", 0.0))
      * mesh.size)
  train_step = step_lib.make_train_step(model_def, tx, schedule,
                                        grad_accum_steps=config.optimizer.grad_accum_steps, loss_fn=loss_fn)
  compiled = compile_train_step(train_step, abstract_state, mesh, config)
  # Processes finish compiling at different times; their first collective must not wait for a slow
  # peer (CPU gloo gives up after 30s), so they meet at a coordination-service barrier first.
  checkpointing.barrier("gato_train_compiled", timeout_s=START_BARRIER_TIMEOUT_S)
  preemption = checkpointing.PreemptionWatcher()
  config_json = checkpointing.config_to_json(config)
  save = lambda s, st, force: ckpt.save(s, st, data_iterator=iterator, config=config_json, force=force)

  last_step = config.num_train_steps if stop_after_steps is None else min(config.num_train_steps,
                                                                          step + stop_after_steps)
  interval, unchecked, last_scalars, preempted, first = [], None, None, False, True
  check = lambda pending: _check_finite(pending, config.on_nonfinite, task_names)
  try:
    while step < last_step:
      local = iterator.get_next()
      if first:
        features.check_batch(local, length, config.model.patch_size, where="data iterator batch")
      batch = partitioning.global_batch(local, mesh, config.batch_size)
      state, metrics = compiled(state, batch)
      step += 1
      if on_step is not None:
        on_step(step)
      check(unchecked)  # the previous step's, now that this one is queued behind it
      unchecked = (step, metrics, batch["task_index"])
      if first:
        jax.block_until_ready(metrics)  # throughput is measured from the end of the first step
        metrics_logger.start_timer(step)
        first = False
      interval.append(metrics)
      if step % config.log_every_steps == 0 or step == last_step:
        check(unchecked)
        unchecked = None
        last_scalars = metrics_logger.log(step, jax.device_get(interval))
        interval = []
      save(step, state, force=step == last_step)
      if preemption.reached(step):
        logging.warning("Preempted at step %d: saving and exiting.", step)
        if ckpt.latest_step() != step:
          save(step, state, force=True)
        preempted = True
        break
    check(unchecked)
    if (step == config.num_train_steps and config.checkpoint.export_params and not preempted
        and step > 0):
      ckpt.wait_until_finished()
      checkpointing.export_params(state.params, os.path.join(workdir, "params"))
  finally:
    preemption.close()
    ckpt.wait_until_finished()
    ckpt.close()
    metrics_logger.close()
  return TrainResult(state=state, step=step, preempted=preempted, last_metrics=last_scalars)


def compile_train_step(train_step, abstract_state, mesh, config):
  """The train step compiled ahead of time for the global batch, with explicit shardings (the loop's
  and bench/train_step.py's one way to build it)."""
  shapes = features.feature_shapes(config.data.sequence_length, config.model.patch_size)
  shardings = partitioning.batch_shardings(shapes, mesh)
  abstract_batch = {name: jax.ShapeDtypeStruct((config.batch_size,) + shape, features.FEATURE_DTYPES[name],
                                               sharding=shardings[name]) for name, shape in shapes.items()}
  jitted = step_lib.jit_train_step(train_step, jax.tree.map(lambda x: x.sharding, abstract_state),
                                   shardings, mesh)
  started = time.perf_counter()
  with partitioning.axis_rules(mesh):
    compiled = jitted.lower(abstract_state, abstract_batch).compile()
  logging.info("Compiled the train step in %.1fs.", time.perf_counter() - started)
  return compiled


def _check_finite(pending, on_nonfinite: str, task_names) -> None:
  if pending is None:
    return
  step, metrics, task_index = pending
  if float(metrics["finite"]) >= 1:
    return
  if not task_index.is_fully_addressable:  # every process reaches this at the same step
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    task_index = multihost_utils.process_allgather(task_index, tiled=True)
  tasks = _task_counts(np.asarray(task_index), task_names)
  if on_nonfinite == "stop":
    raise NonFiniteError(step, tasks)
  logging.warning("Skipped the update of step %d: non-finite loss or gradient (tasks: %s).", step, tasks)
