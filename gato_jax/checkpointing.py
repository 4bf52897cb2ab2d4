"""Orbax checkpoints of a training run: train state, per-process data iterators and the config.

Layout of `<workdir>/checkpoints/<step>/`:
  state/          the TrainState (params, optimizer state, step, rng), sharded arrays (StandardSave)
  data_iterator/  process_<i>-of-<n>*: each process's input-iterator state (tf.data via
                  tf.train.Checkpoint, or the synthetic iterator's JSON), written by that process
  config/         the resolved config as JSON

Saves are asynchronous (the arrays are copied off the device, then written in the background) and
atomic: Orbax writes into a temporary directory and renames it when every process is done, so a
process killed mid-save leaves only a temporary directory, which is ignored and removed. A
checkpoint that was committed but cannot be read back (lost or truncated files) is moved aside to
`<step>.unreadable-<time>` with a warning, and the previous checkpoint is restored instead.

Restoring goes through `StandardRestore` onto an abstract state that carries the *target* shardings,
so a checkpoint written on one mesh (say 8 devices, fsdp=4 x tensor=2) restores onto any other
(say 1 device): that is resharding, done by Orbax while reading.
"""

import asyncio
import itertools
import json
import os
import signal
import tempfile
import threading
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

STATE, DATA_ITERATOR, CONFIG = "state", "data_iterator", "config"


# ---------------------------------------------------------------------------------------------------
# The data iterator as an Orbax item: every process saves and restores its own iterator.
# ---------------------------------------------------------------------------------------------------

def _process_prefix() -> str:
  return f"process_{jax.process_index()}-of-{jax.process_count()}"


class DataIteratorHandler(ocp.AsyncCheckpointHandler):
  """Saves an iterator with the `save(filename) / restore(filename)` contract of clu's
  `TfDatasetIterator`, one file set per process.

  The iterator writes to a local temporary directory while the train loop is paused (tf.data
  iterators must be saved synchronously); the bytes then go to the checkpoint directory (any epath:
  local, gs://) in Orbax's background commit, after Orbax has created the directory.
  """

  async def async_save(self, directory: epath.Path, args: "DataIteratorSave"):
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
      args.iterator.save(os.path.join(tmp, "state"))
      for name in sorted(os.listdir(tmp)):
        with open(os.path.join(tmp, name), "rb") as f:
          files[name[len("state"):]] = f.read()
    if not files:
      raise RuntimeError(f"data iterator {type(args.iterator).__name__}.save() wrote no file")
    prefix = _process_prefix()

    async def write():
      for suffix, data in files.items():
        (directory / (prefix + suffix)).write_bytes(data)

    return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name="data_iterator_save")]

  def save(self, directory: epath.Path, args: "DataIteratorSave"):
    for f in asyncio.run(self.async_save(directory, args)):
      f.result()

  def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
    prefix = _process_prefix()
    found = sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix))
    if not found:
      present = sorted(p.name for p in directory.iterdir())
      raise FileNotFoundError(
          f"{directory}: no data iterator state for {prefix} (files: {present or 'none'}). "
          "A run restarted with a different number of processes cannot resume its input streams; "
          "set --config.checkpoint.restore_data_iterator=False to restart them from the seed.")
    with tempfile.TemporaryDirectory() as tmp:
      for name in found:
        with open(os.path.join(tmp, "state" + name[len(prefix):]), "wb") as f:
          f.write((directory / name).read_bytes())
      args.iterator.restore(os.path.join(tmp, "state"))
    return args.iterator

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
class DataIteratorSave(ocp.args.CheckpointArgs):
  def __init__(self, iterator):
    self.iterator = iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
class DataIteratorRestore(ocp.args.CheckpointArgs):
  def __init__(self, iterator):
    self.iterator = iterator


def _absolute(path) -> epath.Path:
  """Orbax (tensorstore) refuses relative local paths; bucket URLs (gs://...) are left as they are."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


# ---------------------------------------------------------------------------------------------------
# The manager.
# ---------------------------------------------------------------------------------------------------

class Checkpointer:
  """The run's CheckpointManager with the keep policy, torn-checkpoint fallback and config record."""

  def __init__(self, directory, *, every_steps: int, keep_last: int = 3, keep_every: int = 0,
               async_save: bool = True):
    _no_replica_parallel_on_cpu()
    self.directory = _absolute(directory)
    leftovers = _temporary_dirs(self.directory) if jax.process_index() == 0 else []
    if leftovers:
      logging.warning("Removing %d unfinished checkpoint(s) of an interrupted save: %s", len(leftovers),
                      [p.name for p in leftovers])
    policies = [ocp.checkpoint_managers.LatestN(keep_last)]
    if keep_every:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(1, every_steps)),
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(), DATA_ITERATOR: DataIteratorHandler(),
                       CONFIG: ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, data_iterator=None, config: Mapping[str, Any] | None = None,
           force: bool = False) -> bool:
    """Saves if the interval says so (or `force`); returns whether a save started (async)."""
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = DataIteratorSave(data_iterator)
    if config is not None:
      items[CONFIG] = ocp.args.JsonSave(dict(config))
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, *, data_iterator=None):
    """The state of `step` onto `abstract_state`'s shardings (and the iterator, restored in place)."""
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = DataIteratorRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def restore_latest(self, abstract_state, *, data_iterator=None):
    """(state, step) of the newest readable checkpoint, or (None, None) when there is none.

    A checkpoint that fails to read on any process is moved aside with a warning and the one before
    it is tried, so every process ends up on the same step.
    """
    for step in sorted(self.all_steps(), reverse=True):
      error = None
      try:
        state = self.restore(step, abstract_state, data_iterator=data_iterator)
      except Exception as e:  # pylint: disable=broad-except  # any unreadable file means "torn"
        state, error = None, e
      if _all_processes_ok(error is None):
        return state, step
      logging.warning("Checkpoint %s of %s is unreadable (%s: %s); falling back to the previous one.",
                      step, self.directory, type(error).__name__ if error else "failed on another process",
                      str(error)[:500] if error else "")
      self._move_aside(step)
    return None, None

  def restore_config(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[CONFIG]

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = self.directory / str(step)
      target = self.directory / f"{step}.unreadable-{int(time.time())}"
      path.rename(target)
      logging.warning("Moved %s to %s.", path, target)
    barrier(f"gato_checkpoint_move_aside_{step}")
    self._manager.reload()

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _no_replica_parallel_on_cpu() -> None:
  """Orbax splits the writing of replicated arrays among replicas, compiling a slice per shape and
  device; on CPU all replicas share one host's memory, so that only costs compilations."""
  if jax.local_devices()[0].platform == "cpu" and not _no_replica_parallel_on_cpu.done:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
    _no_replica_parallel_on_cpu.done = True


_no_replica_parallel_on_cpu.done = False


def _temporary_dirs(directory: epath.Path) -> list[epath.Path]:
  if not directory.exists():
    return []
  return [p for p in directory.iterdir() if p.is_dir() and ".orbax-checkpoint-tmp" in p.name]


def _all_processes_ok(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def barrier(name: str, timeout_s: int = 600) -> None:
  """Waits for every process at the coordination service (no device collective: nothing to compile,
  and no CPU gloo connection that gives up after 30s). Every process must make the same calls in the
  same order; a counter keeps the service's barrier names unique."""
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f"{name}_{next(_barrier_count)}", timeout=timeout_s)


_barrier_count = itertools.count()


# ---------------------------------------------------------------------------------------------------
# Params only, for evaluation.
# ---------------------------------------------------------------------------------------------------

def export_params(params, directory) -> None:
  """Writes the params alone (no optimizer state) to `directory`, for evaluation and serving."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(_absolute(directory), params, force=True)


def load_params(path, abstract_params):
  """Params onto `abstract_params`' shardings (ShapeDtypeStructs with `.sharding`, any mesh) from an
  `export_params` directory or a training checkpoint step directory (`.../checkpoints/<step>`)."""
  path = _absolute(path)
  if (path / STATE).exists():  # a training checkpoint: read only the params subtree
    handler = ocp.PyTreeCheckpointHandler()
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)
    with ocp.Checkpointer(handler) as checkpointer:
      restored = checkpointer.restore(path / STATE, args=ocp.args.PyTreeRestore(
          item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True))
    return restored["params"]
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path, abstract_params)


# ---------------------------------------------------------------------------------------------------
# Preemption: save before the scheduler's SIGTERM becomes a SIGKILL.
# ---------------------------------------------------------------------------------------------------

class PreemptionWatcher:
  """Tells the loop when to save and exit because the job is being preempted.

  Multi-process jobs use jax's preemption sync manager (it catches SIGTERM itself and makes every
  process agree on the same step, so they save the same checkpoint). A single process installs a
  SIGTERM handler that only sets a flag; the loop checks it between steps.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._distributed = False
    self._previous = None
    if jax.process_count() > 1:
      from jax._src import distributed  # pylint: disable=g-import-not-at-top
      self._distributed = distributed.global_state.preemption_sync_manager is not None
    if not self._distributed and threading.current_thread() is threading.main_thread():
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
    if self._distributed:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag.is_set()


def config_to_json(config) -> dict[str, Any]:
  """A ConfigDict as plain JSON (what the checkpoint and `<workdir>/config.json` record)."""
  return json.loads(config.to_json_best_effort())
