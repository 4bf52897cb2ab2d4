"""Orbax checkpoints of a training run: train state, per-process data iterators and the config.

Layout of `<workdir>/checkpoints/<step>/`:
  state/          the TrainState (params, optimizer state, step, rng), sharded arrays (StandardSave)
  data_iterator/  process_<i>-of-<n>*: each process's input-iterator state, written by that
                  process (gato_jax/iterator_checkpoint.py)
  config/         the resolved config as JSON

Committed: a step is committed when Orbax lists it (`committed_steps`: Orbax's standard step names,
finalized by its atomic rename, or commit_success.txt on buckets). gato-train and gato-eval both
use that one definition. Saves are asynchronous and atomic: a process killed mid-save leaves only
Orbax's temporary directory, which is ignored and removed.

Reading a committed checkpoint back can fail two ways (`restore_latest`):
  storage    the storage refused or is away: permission denied, not found with the step directory
             itself missing or unlistable, I/O errors, quota / disk full, a storage status UNAVAILABLE /
             DEADLINE_EXCEEDED / PERMISSION_DENIED / RESOURCE_EXHAUSTED: retried with backoff for a
             bounded time (`read_attempts`); nothing is ever renamed, nothing falls back, nothing
             starts fresh; if it persists the run stops (CheckpointError, exit 4)
  corrupt    proven only by the data: the step directory is there and listable but its data fails to
             read (lost or truncated files), twice in a row: `checkpoint.on_unreadable` decides:
             fallback  the newest readable checkpoint is restored and the newer unreadable ones are
                       moved to `<step>.unreadable-<time>`; when none is readable: refuse
             restart   as fallback, but when none is readable move them all aside and start at step 0
             fail      refuse at the first unreadable checkpoint, moving nothing
A workdir whose config.json says a run was there but whose checkpoints/ is missing (an unmounted
disk) is refused too, unless `on_unreadable=restart` (`check_checkpoints_present`).
Each attempt restores into a freshly built input iterator, so a fallback or a fresh start reads the
same batches as a run that never saw the unreadable checkpoint.

Restoring goes through `StandardRestore` onto an abstract state that carries the *target* shardings,
so a checkpoint written on one mesh restores onto any other (Orbax reshards while reading).
"""

import contextlib
import itertools
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

# What a run's checkpoint directory holds, for readers that train nothing (evaluation, init_from).
from gato_jax.checkpoint_files import (CONFIG, DATA_ITERATOR, METRICS, NAME_FORMAT, STATE,  # pylint: disable=unused-import
                                       absolute as _absolute, best_step, committed_steps, config_to_json,
                                       export_params, load_params, metric_value, skipped_entries)
from gato_jax.iterator_checkpoint import DataIteratorHandler, DataIteratorRestore, DataIteratorSave
from gato_jax.iterator_checkpoint import IteratorMismatchError
from gato_jax.storage_errors import _reason, is_collective_error, is_disk_full, is_transient  # pylint: disable=unused-import

ON_UNREADABLE = ("fallback", "restart", "fail")

class CheckpointError(RuntimeError):
  """Checkpoints that cannot be read or written; the message names the steps and what to do."""


CHECKPOINT_ERRORS = (CheckpointError, IteratorMismatchError)  # what gato-train reports with exit 4


def check_checkpoints_present(workdir, on_unreadable: str) -> None:
  """Refuses a workdir that had a run (its config.json) but has no checkpoints/ now: an unmounted or
  emptied disk must not read as "start over from step 0" unless `on_unreadable=restart` says so."""
  workdir = _absolute(workdir)
  try:
    had_run = (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()
  except OSError as e:
    raise CheckpointError(f"cannot look into {workdir} ({_reason(e)}); nothing was changed: rerun when "
                          "the storage is back") from e
  if had_run and on_unreadable != "restart":
    raise CheckpointError(
        f"{workdir} had a run (its config.json) but its checkpoints/ directory is missing (an unmounted "
        "disk, or deleted?); not starting over from step 0. To start again from step 0, set "
        "--config.checkpoint.on_unreadable=restart")


# ---------------------------------------------------------------------------------------------------
# The manager.
# ---------------------------------------------------------------------------------------------------

_OK, _CORRUPT, _TRANSIENT = 0, 1, 2


# As long as the slowest process may take to build its data iterator (a cold TFDS/SeqIO cache).
OPEN_BARRIER_TIMEOUT_S = 1800


class TrainCheckpointManager:
  """The run's Orbax CheckpointManager: keep policy, unreadable-checkpoint handling (module docstring),
  config record, disk-full errors that say the previous checkpoint is intact, and preemption."""

  def __init__(self, directory, *, every_steps: int, keep_last: int = 3, keep_every: int = 0,
               async_save: bool = True, read_attempts: int = 4, retry_backoff_s: float = 2.0,
               best_metric: str = "", best_mode: str = "max"):
    _no_replica_parallel_on_cpu()
    self.directory = _absolute(directory)
    self._read_attempts, self._retry_backoff_s = max(1, read_attempts), retry_backoff_s
    self._saving: int | None = None  # the step of the save in flight, for error messages
    self._best = (best_metric, best_mode) if best_metric else None
    # Orbax's manager runs a device collective as it opens; processes arrive from building their data
    # at different times and CPU gloo gives up on a peer after 30 s, so they meet here first.
    barrier("gato_checkpoints_open", timeout_s=OPEN_BARRIER_TIMEOUT_S)
    self._storage_retry(lambda: self._open(every_steps, keep_last, keep_every, async_save),
                        f"opening the checkpoint directory {self.directory}")

  def _storage_retry(self, fn, what: str):
    """fn(), retried with backoff while it fails with a storage error; then one CheckpointError."""
    for attempt in range(self._read_attempts):
      try:
        return fn()
      except Exception as e:  # pylint: disable=broad-except  # classified just below
        if not is_transient(e, self.directory):
          raise
        if attempt + 1 == self._read_attempts:
          raise CheckpointError(f"{what} failed {self._read_attempts} times ({_reason(e)}); nothing was "
                                "moved or deleted: fix the storage (permissions, mount, quota) and rerun") from e
        delay = self._retry_backoff_s * 2 ** attempt
        logging.warning("%s failed (%s); retrying in %.0f s.", what, _reason(e), delay)
        time.sleep(delay)
    raise AssertionError("unreachable")

  def _open(self, every_steps, keep_last, keep_every, async_save):
    leftovers = _temporary_dirs(self.directory) if jax.process_index() == 0 else []
    if leftovers:
      logging.warning("Removing %d unfinished checkpoint(s) of an interrupted save: %s", len(leftovers),
                      [p.name for p in leftovers])
    policies = [ocp.checkpoint_managers.LatestN(keep_last)]
    if keep_every:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
    best = {}
    if self._best:
      # The best scored step is kept beside the last ones; steps saved without metrics are left to
      # LatestN. best_fn also makes Orbax write each save's metrics (`<step>/metrics`).
      metric, mode = self._best
      best = dict(best_fn=lambda m: metric_value(m, metric, mode), best_mode=mode)
      policies.append(ocp.checkpoint_managers.BestN(get_metric_fn=best["best_fn"], reverse=mode == "min", n=1,
                                                    keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(1, every_steps)),
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        step_name_format=NAME_FORMAT, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True, create=True, **best)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(), DATA_ITERATOR: DataIteratorHandler(),
                       CONFIG: ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Orbax's check of jax's preemption sync point (multi-process: every process agrees on `step`)."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state, *, data_iterator=None, config: Mapping[str, Any] | None = None,
           force: bool = False, metrics: Mapping[str, float] | None = None) -> bool:
    """Saves if the interval says so (or `force`); returns whether a save started (async). `metrics`
    (the step's evaluation scalars) rank it for the best-checkpoint policy."""
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = DataIteratorSave(data_iterator)
    if config is not None:
      items[CONFIG] = ocp.args.JsonSave(dict(config))
    with self._save_errors(step):
      started = self._manager.save(step, args=ocp.args.Composite(**items), force=force,
                                   metrics=dict(metrics) if metrics and self._best else None)
    if started:
      self._saving = step
    return started

  def wait_until_finished(self) -> None:
    with self._save_errors():
      self._manager.wait_until_finished()
    self._saving = None

  @contextlib.contextmanager
  def _save_errors(self, step: int | None = None):
    """Turns a failed (possibly earlier, asynchronous) save into one CheckpointError that says which
    checkpoint is still intact. Device and collective errors pass as they are: in a multi-process
    save they mean a lost peer (the loop says so), not a storage problem."""
    try:
      yield
    except (CheckpointError, jax.errors.JaxRuntimeError):
      raise
    except Exception as error:  # pylint: disable=broad-except
      failed = self._saving if self._saving is not None else step
      committed = [s for s in committed_steps(self.directory) if s != failed]
      full = is_disk_full(error)
      fix = "free space, then rerun" if full else "rerun"
      then = (f"the previous checkpoint (step {committed[-1]}) is intact: {fix} and training resumes from "
              "it" if committed else f"there is no earlier checkpoint: {fix} and training starts at step 0")
      raise CheckpointError(
          f"saving checkpoint step {failed} to {self.directory} failed: "
          f"{'no space left on device' if full else _reason(error)}; {then}") from error

  def restore(self, step: int, abstract_state, *, data_iterator=None):
    """The state of `step` onto `abstract_state`'s shardings (and the iterator, restored in place
    once the state has been read)."""
    state = self._manager.restore(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]
    if data_iterator is not None:
      self._manager.restore(step, args=ocp.args.Composite(
          **{DATA_ITERATOR: DataIteratorRestore(data_iterator)}))
    return state

  def restore_config(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[CONFIG]

  def restore_latest(self, abstract_state, *, make_iterator: Callable[[], Any] | None = None,
                     on_unreadable: str = "fallback"):
    """(state, step, iterator) of the newest readable checkpoint, or (None, None, a fresh iterator).

    `make_iterator()` builds a fresh input iterator (None: the iterator is neither built nor
    restored); every attempt gets a new one. Every process ends on the same step: they agree on
    each checkpoint's outcome before acting on it.
    """
    if on_unreadable not in ON_UNREADABLE:
      raise ValueError(f"config.checkpoint.on_unreadable={on_unreadable!r} must be one of {ON_UNREADABLE}")
    self._wait_for_directory()
    self._manager.reload()
    unreadable: dict[int, str] = {}
    for step in sorted(self.all_steps(), reverse=True):
      iterator = make_iterator() if make_iterator is not None else None
      state, reason = self._read(step, abstract_state, iterator)
      if reason is None:
        for bad in unreadable:
          self._move_aside(bad)
        if unreadable:
          logging.warning("Restored step %d; checkpoint(s) %s were unreadable (%s) and moved aside.", step,
                          sorted(unreadable), _listed(unreadable))
        return state, step, iterator
      unreadable[step] = reason
      logging.warning("Checkpoint %d of %s is unreadable (%s).", step, self.directory, reason)
      if on_unreadable == "fail":
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is unreadable ({reason}); nothing was moved. "
            "Set --config.checkpoint.on_unreadable=fallback to restore the newest readable one instead")
    if unreadable and on_unreadable != "restart":
      raise CheckpointError(
          f"every checkpoint in {self.directory} is unreadable: {_listed(unreadable)}; nothing was moved. "
          "To start again from step 0, set --config.checkpoint.on_unreadable=restart (it moves them to "
          "<step>.unreadable-<time>)")
    for bad in unreadable:
      self._move_aside(bad)
    if unreadable:
      logging.warning("Every checkpoint was unreadable (%s); on_unreadable=restart: starting at step 0.",
                      _listed(unreadable))
    return None, None, make_iterator() if make_iterator is not None else None

  def _wait_for_directory(self) -> None:
    """The manager created the directory; if it is gone now the storage is away (an unmounted disk),
    which must not read as "no checkpoint, start at step 0"."""
    for attempt in range(self._read_attempts):
      if _agree(_OK if self.directory.exists() else _TRANSIENT) == _OK:
        return
      if attempt + 1 < self._read_attempts:
        time.sleep(self._retry_backoff_s * 2 ** attempt)
    raise CheckpointError(f"the checkpoint directory {self.directory} has disappeared (an unmounted disk or "
                          "a storage outage?); not starting over from step 0: rerun when it is back")

  def _read(self, step: int, abstract_state, iterator):
    """(state, None), or (None, why) for a corrupt checkpoint (failing twice in a row: one failed read is
    no proof); storage errors are retried, then raised."""
    suspect = False
    for attempt in range(self._read_attempts):
      error, outcome = None, _OK
      try:
        state = self.restore(step, abstract_state, data_iterator=iterator)
      except IteratorMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # classified below
        if is_collective_error(e):
          raise  # a peer's failure, not this checkpoint's: the caller reports a lost peer
        state, error = None, e
        outcome = _TRANSIENT if is_transient(e, self.directory / NAME_FORMAT.build_name(step)) else _CORRUPT
      outcome = _agree(outcome)  # the worst outcome of any process
      if outcome == _OK:
        return state, None
      if outcome == _CORRUPT:
        if suspect or attempt + 1 == self._read_attempts:
          return None, _reason(error) if error is not None else "unreadable on another process"
        suspect = True
        self._manager.reload()
        continue
      why = _reason(error) if error is not None else "unavailable on another process"
      if attempt + 1 == self._read_attempts:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} could not be read after {self._read_attempts} "
            f"attempts ({why}); the storage looks unavailable, so nothing was moved or deleted: rerun "
            "when it is back") from error
      delay = self._retry_backoff_s * 2 ** attempt
      logging.warning("Reading checkpoint %d failed transiently (%s); retrying in %.0f s.", step, why, delay)
      time.sleep(delay)
      self._manager.reload()
    raise AssertionError("unreachable")

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = self.directory / NAME_FORMAT.build_name(step)
      target = self.directory / f"{path.name}.unreadable-{int(time.time())}"
      path.rename(target)
      logging.warning("Moved %s to %s.", path, target)
    barrier(f"gato_checkpoint_move_aside_{step}")
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()




def _listed(unreadable: Mapping[int, str]) -> str:
  return "; ".join(f"step {s} ({why})" for s, why in sorted(unreadable.items(), reverse=True))


def _agree(outcome: int) -> int:
  if jax.process_count() == 1:
    return outcome
  return int(np.max(multihost_utils.process_allgather(np.array(outcome, np.int32))))


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


def barrier(name: str, timeout_s: int = 600) -> None:
  """Waits for every process at the coordination service (no device collective: nothing to compile,
  and no CPU gloo connection that gives up after 30s). Every process must make the same calls in the
  same order; a counter keeps the service's barrier names unique."""
  if jax.process_count() > 1:
    # Not ocp.multihost.sync_global_processes: by default that is a device collective (gloo on CPU).
    ocp.multihost.get_barrier_sync_fn()(key=f"{name}_{next(_barrier_count)}", timeout_ms=timeout_s * 1000)


_barrier_count = itertools.count()
