"""The training loop: mesh, sharded state, restore-or-init, jitted steps, logging, checkpoints, preemption.

`train(config, workdir)` is what `gato-train` runs; tests call it with a small model and synthetic
data. Every process runs the same loop on its own slice of the global batch.

Host/device overlap: the loop never waits for a step it has just dispatched. The finiteness of step s
is checked after step s + 1 is queued, and metrics are fetched only at log steps.
"""

import contextlib
import dataclasses
import os
import shutil
import signal
import threading
from typing import Callable, Sequence

from absl import logging
import jax

from gato_jax import checkpointing, features, partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import evals as evals_lib, failures, flops, logger, state as state_lib, step as step_lib
from gato_jax.training import init_from, program as program_lib
from gato_jax.training.failures import DataLossError, NonFiniteError, NonFiniteGuard, PeerLostError
from gato_jax.training.options import ConfigError, RunOptions
from gato_jax.training.synthetic import SyntheticIterator

START_BARRIER_TIMEOUT_S = 1800
__all__ = ["ConfigError", "DataLossError", "NonFiniteError", "PeerLostError", "TrainResult", "train"]


@dataclasses.dataclass
class TrainResult:
  state: state_lib.TrainState
  step: int
  preempted: bool = False
  last_metrics: dict[str, float] | None = None


default_model_fn = program_lib.default_model_fn


def make_data_iterator(config, layout: VocabLayout, split: str = "train"):
  """(iterator over this process's slice of the global batch, task names in task_index order), from
  the SeqIO mixture `config.data.mixture` or synthetic features when it is "synthetic"."""
  if config.data.mixture == "synthetic":
    iterator = SyntheticIterator(
        layout, config.batch_size, config.data.sequence_length, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_patch_positions=config.model.num_patch_positions,
        max_obs_positions=config.model.max_obs_positions,
        max_image_tokens=config.model.max_image_tokens)
    return iterator, list(iterator.task_names)
  data_dir = str(config.data.data_dir)
  if "://" not in data_dir and os.path.exists(os.path.expanduser(data_dir)) and not os.path.isdir(
      os.path.expanduser(data_dir)):
    raise ConfigError(f"config.data.data_dir={data_dir!r} is a file, not a directory of built datasets")
  if "://" not in data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
    raise ConfigError(f"config.data.data_dir={data_dir!r} does not exist; build the mixture's datasets "
                      f"there first (gato-data build --data_dir={data_dir} --dataset=...)")
  from gato_jax import data  # pylint: disable=g-import-not-at-top  # TensorFlow + SeqIO
  try:
    data.pipeline.check_model_fits(config)  # images the model cannot see: one line, before training
    iterator = data.make_iterator(config, split, jax.process_index(), jax.process_count(), config.seed)
    return iterator, data.task_names(data.make_mixture(config))
  except (KeyError, ValueError, FileNotFoundError) as e:  # the data's own messages name task and file
    raise ConfigError(f"config.data.mixture={config.data.mixture!r} (data_dir {data_dir}): "
                      f"{str(e).strip()}") from e


def check_config(config) -> RunOptions:
  """The loop's options read once; refuses settings the loop cannot honour, naming the key."""
  run = RunOptions.from_config(config)
  if config.optimizer.grad_accum_steps < 1:
    raise ConfigError(f"config.optimizer.grad_accum_steps={config.optimizer.grad_accum_steps} must be >= 1")
  if config.optimizer.decay_factor < 1:
    raise ConfigError(f"config.optimizer.decay_factor={config.optimizer.decay_factor} must be >= 1")
  return run


def create_state(model_fn: state_lib.ModelFn, tx, mesh, model_def: state_lib.ModelDef, config):
  """The train state of a run that starts at step 0 (no checkpoint to resume): the one place where a
  fresh state is made."""
  state = state_lib.create_train_state(model_fn, tx, mesh, model_def, config.seed,
                                       rules=partitioning.rules_from_config(config.mesh))
  # Fine-tuning (#17): a fresh run may take another run's parameters (config.init_from). A run that
  # resumes its own checkpoint never gets here, so restarts stay exact.
  return init_from.apply(config, state)


def _save_config_json(config, workdir: str) -> None:
  """`<workdir>/config.json`, written once the config has been checked and its data found."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


@contextlib.contextmanager
def _collectives_at(what: str):
  """A collective that fails before the first step, in a multi-process job, is a lost peer."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    raise PeerLostError(f"process {jax.process_index()} of {jax.process_count()}: a collective failed while "
                        f"{what}, so another process died, lost contact or is far behind "
                        f"({str(e).strip().splitlines()[0][:300]}); nothing was moved or deleted") from e


def train(config, workdir: str, *, model_fn: state_lib.ModelFn | None = None,
          loss_fn: step_lib.LossFn = step_lib.gato_loss, data_iterator=None,
          task_names=None, stop_after_steps: int | None = None,
          on_step: Callable[[int], None] | None = None, devices=None,
          evaluators: Sequence[evals_lib.StepEvaluator] = ()) -> TrainResult:
  """Trains to `config.num_train_steps`, resuming from `<workdir>/checkpoints` when it has any.

  `data_iterator` (with `task_names`, for reports) replaces the one `config.data` describes;
  `stop_after_steps` ends this call early (for tests and staged runs) without changing the schedule;
  `on_step(step)` runs after every dispatched step (tests use it to inject failures); `devices`
  restricts the mesh to some devices (default: every device of every process); `evaluators` run
  during training when due (gato_jax/training/evals.py; gato-train builds them from config.evals).
  """
  run = check_config(config)
  mesh = partitioning.make_mesh(config.mesh, devices)
  partitioning.check_batch_size(config.batch_size, mesh, config.optimizer.grad_accum_steps)
  program = program_lib.build(config, mesh, model_fn=model_fn, loss_fn=loss_fn)
  layout, model_fn, model_def = program.layout, program.model_fn, program.model_def
  tx, abstract_state = program.tx, program.abstract_state

  is_primary = jax.process_index() == 0
  if data_iterator is None:
    # Built anew for every restore attempt: a failed attempt may have moved the one it was given.
    make_iterator = lambda: make_data_iterator(config, layout)[0]
    iterator, task_names = make_data_iterator(config, layout)  # also checks the mixture and its data
  else:  # the caller's own: cannot be rebuilt (the state is read first, so a bad one leaves it alone)
    make_iterator = lambda: data_iterator
    iterator = data_iterator
    task_names = task_names if task_names is not None else getattr(data_iterator, "task_names", None)
  # Refusals that must leave the workdir as it was come before its first write.
  checkpointing.check_checkpoints_present(workdir, run.on_unreadable)
  init_from.check_before_writing(config, abstract_state.params, workdir)
  first_run = "://" not in workdir and not os.path.exists(os.path.join(workdir, "config.json"))
  # Every process checks the workdir before the first writes to it (a late one would otherwise see
  # the primary's config.json without checkpoints/ and call the run's checkpoints lost).
  checkpointing.barrier("gato_workdir_checked", timeout_s=START_BARRIER_TIMEOUT_S)
  _save_config_json(config, workdir)
  with _collectives_at("opening the checkpoints"):
    ckpt = checkpointing.TrainCheckpointManager(
        os.path.join(workdir, "checkpoints"), every_steps=config.checkpoint_every_steps,
        keep_last=config.checkpoint.keep_last, keep_every=config.checkpoint.keep_every,
        async_save=config.checkpoint.async_save,
        # Only a run that evaluates while it trains has scores to keep its best checkpoint by.
        best_metric=run.best_metric if evaluators else "", best_mode=run.best_mode)
  fresh = [iterator]  # the one built above serves the first restore attempt; later ones get new ones
  new_iterator = lambda: fresh.pop() if fresh else make_iterator()
  restore_iterator = config.checkpoint.restore_data_iterator
  with _collectives_at("restoring the latest checkpoint"):
    state, step, restored = ckpt.restore_latest(
        abstract_state, make_iterator=new_iterator if restore_iterator else None,
        on_unreadable=run.on_unreadable)
  iterator = restored if restore_iterator else iterator
  if state is None:
    state, step = create_state(model_fn, tx, mesh, model_def, config), 0
    logging.info("Initialised a new train state.")
  else:
    logging.info("Resumed from step %d.", step)
  total_params, non_embedding = flops.param_counts(model_def)
  logging.info("Model: %d parameters (%d non-embedding); mesh %s over %d devices in %d process(es).",
               total_params, non_embedding, dict(mesh.shape), mesh.size, jax.process_count())
  if jax.default_backend() == "cpu" and not os.environ.get("MALLOC_MMAP_MAX_") and not os.environ.get("LD_PRELOAD"):
    logging.info("CPU run on glibc's default malloc, which maps every buffer over 32 MB afresh each step: "
                 "MALLOC_MMAP_MAX_=0 MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=1099511627776 made gato_79m's "
                 "step 1.57x faster (README, Performance).")

  length = config.data.sequence_length
  metrics_logger = logger.MetricsLogger(
      workdir if is_primary else None, num_train_steps=config.num_train_steps,
      tokens_per_step=config.batch_size * length,
      flops_per_step=flops.train_flops_per_step(model_def, config.model, layout.vocab_size,
                                                config.batch_size, length),
      peak_flops=flops.peak_flops_per_device(config.model.dtype, run.peak_flops_per_device)
      * mesh.size)
  compiled = program_lib.compile_train_step(program.train_step, abstract_state, mesh, config)
  # Processes finish compiling at different times; their first collective must not wait for a slow
  # peer (CPU gloo gives up after 30s), so they meet at a coordination-service barrier first.
  checkpointing.barrier("gato_train_compiled", timeout_s=START_BARRIER_TIMEOUT_S)
  preemption = PreemptionWatcher(ckpt)
  config_json = checkpointing.config_to_json(config)
  save = lambda s, st, force, metrics=None: ckpt.save(s, st, data_iterator=iterator, config=config_json,
                                                      force=force, metrics=metrics)
  evals = evals_lib.TrainingEvals(evaluators, workdir if is_primary else None,
                                  memorising_patience=run.memorising_patience)

  last_step = config.num_train_steps if stop_after_steps is None else min(config.num_train_steps,
                                                                          step + stop_after_steps)
  interval, unchecked, last_scalars, preempted, first = [], None, None, False, True
  check = NonFiniteGuard(config.on_nonfinite,
                         run.max_consecutive_skips, task_names)
  peer_lost = False
  try:
    while step < last_step:
      local = _next_batch(iterator, config)
      if first:
        features.check_batch(local, length, where="data iterator batch")
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
      scores = evals.run(step, params=state.params, model_state=state.model_state, model_def=model_def,
                         mesh=mesh, last=step == last_step,
                         train_loss=last_scalars.get("loss") if last_scalars else None)
      save(step, state, force=step == last_step, metrics=scores)
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
  except DataLossError:
    # A malformed episode in the first batches of a new run: the run leaves nothing but its log.
    if first_run:
      ckpt.wait_until_finished()
      if ckpt.latest_step() is None:
        metrics_logger.close()
        _forget_first_run(workdir)
    raise
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    # In a multi-process job a failed collective means a peer died or cannot be reached; waiting for
    # the checkpoint in flight would wait for that peer too.
    peer_lost = True
    raise PeerLostError(f"process {jax.process_index()} of {jax.process_count()}: a collective failed at "
                        f"step {step + 1}, so another process died or lost contact "
                        f"({str(e).strip().splitlines()[0][:300]}). {_last_checkpoint(ckpt)}") from e
  finally:
    preemption.close()
    evals.close()
    if not peer_lost:
      ckpt.wait_until_finished()
      ckpt.close()
    metrics_logger.close()
  return TrainResult(state=state, step=step, preempted=preempted, last_metrics=last_scalars)


def _forget_first_run(workdir: str) -> None:
  """Removes what a new run wrote before it trained a step (config, TensorBoard, an empty checkpoints/);
  logs/ stays."""
  if jax.process_index() != 0:
    return
  for name in ("config.json", "tensorboard", "checkpoints"):
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
      os.remove(path)


def _last_checkpoint(ckpt) -> str:
  latest = ckpt.latest_step()
  if latest is None:
    return "No checkpoint was committed yet; restart the whole job to start again from step 0."
  return f"The last committed checkpoint is step {latest}; restart the whole job to resume from it."


def _next_batch(iterator, config):
  """The iterator's next batch; a truncated or corrupt input file is named (tf.data names neither)."""
  try:
    return iterator.get_next()
  except Exception as e:  # pylint: disable=broad-except
    if "malformed episode:" in str(e):  # an episode check of the data: its one line, not TF's trace
      from gato_jax.data.readers import malformed_episode_line  # pylint: disable=g-import-not-at-top  # TF: real data
      raise DataLossError(malformed_episode_line(e)) from None
    if type(e).__name__ != "DataLossError":
      raise
    raise failures.describe_data_loss(e, config.data.data_dir) from e


class PreemptionWatcher:
  """Tells the loop when to save and exit because the job is being preempted.

  Multi-process jobs use Orbax's `reached_preemption` (jax's preemption sync manager catches SIGTERM
  and makes every process agree on the step, so they save the same checkpoint). That service runs
  only under jax.distributed, so a single process keeps its own SIGTERM flag, checked between steps.
  """

  def __init__(self, manager: checkpointing.TrainCheckpointManager):
    self._manager = manager
    self._flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    logging.warning("Received signal %d: saving a checkpoint after the current step, then exiting.",
                    signum)
    self._flag.set()

  def close(self) -> None:
    """Puts back the SIGTERM handler that was there before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int) -> bool:
    return self._flag.is_set() or self._manager.reached_preemption(step)
