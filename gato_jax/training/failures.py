"""The ways a training run fails, each turned into one error that names what to look at.

  NonFiniteError  a non-finite loss or gradient (on_nonfinite="stop"), or too many skipped in a row
  PeerLostError   a collective failed in a multi-process job: a peer died or lost contact
  DataLossError   an input file is truncated or corrupt: names the file and the record
"""

import glob
import os

from absl import logging
import numpy as np


class NonFiniteError(FloatingPointError):
  """A step produced a non-finite loss or gradient and `on_nonfinite="stop"`, or `on_nonfinite="skip"`
  skipped `max_consecutive_skips` steps in a row (the run has diverged)."""

  def __init__(self, step: int, tasks: dict[str, int], consecutive: int = 0):
    self.step, self.tasks, self.consecutive = step, tasks, consecutive
    listed = ", ".join(f"{name} ({n} rows)" for name, n in sorted(tasks.items())) or "unknown"
    if consecutive:
      super().__init__(f"non-finite loss or gradient at step {step}, {consecutive} steps in a row "
                       f"(config.max_consecutive_skips={consecutive}): the run has diverged; tasks in the "
                       f"last batch: {listed}. No update of those steps was applied and no params were "
                       "exported; lower the learning rate or resume from an earlier checkpoint.")
    else:
      super().__init__(f"non-finite loss or gradient at step {step}; tasks in the batch: {listed}. "
                       "The update was not applied; the last checkpoint is clean. Set "
                       "--config.on_nonfinite=skip to skip such steps instead.")


class PeerLostError(RuntimeError):
  """A multi-process step failed in a collective: another process died or cannot be reached."""


class DataLossError(RuntimeError):
  """An input file of the data_dir cannot be read to the end."""


def task_counts(task_index, task_names) -> dict[str, int]:
  ids, counts = np.unique(np.asarray(task_index), return_counts=True)
  name = lambda i: task_names[i] if task_names is not None and 0 <= i < len(task_names) else f"task {i}"
  return {name(int(i)): int(n) for i, n in zip(ids, counts)}


class NonFiniteGuard:
  """Checks one step's `finite` metric (after the next step is queued, so the host never waits)."""

  def __init__(self, on_nonfinite: str, max_consecutive_skips: int, task_names):
    self._mode, self._max_skips, self._task_names = on_nonfinite, max_consecutive_skips, task_names
    self.consecutive = 0

  def __call__(self, pending) -> None:
    if pending is None:
      return
    step, metrics, task_index = pending
    if float(metrics["finite"]) >= 1:
      self.consecutive = 0
      return
    if not task_index.is_fully_addressable:  # every process reaches this at the same step
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top  # multi-host only
      task_index = multihost_utils.process_allgather(task_index, tiled=True)
    tasks = task_counts(np.asarray(task_index), self._task_names)
    if self._mode == "stop":
      raise NonFiniteError(step, tasks)
    self.consecutive += 1
    logging.warning("Skipped the update of step %d: non-finite loss or gradient (tasks: %s).", step, tasks)
    if self._max_skips and self.consecutive >= self._max_skips:
      raise NonFiniteError(step, tasks, consecutive=self.consecutive)


def truncated_records(data_dir: str) -> list[tuple[str, int, str]]:
  """(file, index of the first unreadable record, error) for every TFRecord file under `data_dir`
  that cannot be read to the end. Reads every file: only for diagnosing a failure."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # diagnosis of real data only
  found = []
  for path in sorted(glob.glob(os.path.join(os.path.expanduser(data_dir), "**", "*.tfrecord*"),
                               recursive=True)):
    count = 0
    try:
      for _ in tf.data.TFRecordDataset(path):
        count += 1
    except tf.errors.OpError as e:
      found.append((path, count, e.message.split("}}")[-1].strip()))
  return found


def describe_data_loss(error: Exception, data_dir: str) -> DataLossError:
  """tf.data's "truncated record at <offset>" (no file name) as an error naming file and record."""
  bad = truncated_records(data_dir)
  if not bad:
    return DataLossError(f"reading the training data failed ({str(error).strip()[:300]}) but every TFRecord "
                         f"file under {data_dir} reads to the end")
  listed = "; ".join(f"{path} record {index} ({why})" for path, index, why in bad)
  return DataLossError(f"corrupt input data: {listed}. Rebuild the dataset (gato-data build --overwrite "
                       "--dataset=<name>)")
