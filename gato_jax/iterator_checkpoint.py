"""The input iterator as an Orbax checkpoint item: every process saves and restores its own.

A checkpoint's `data_iterator/` holds `process_<i>-of-<n>*`, the files each process's iterator wrote
(tf.data via tf.train.Checkpoint, or the synthetic iterator's JSON).
"""

import asyncio
import os
import tempfile

from etils import epath
import jax
import orbax.checkpoint as ocp


class IteratorMismatchError(ValueError):
  """The checkpoint's input-iterator state does not fit this run (not corruption: nothing moves)."""


_ORBAX_FILES = ("commit_success.txt",)  # Orbax's own bookkeeping in every item directory


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
    present = sorted(p.name for p in directory.iterdir() if p.name not in _ORBAX_FILES
                     and not p.name.startswith("_")) if directory.exists() else []
    found = [name for name in present if name.startswith(prefix)]
    if not found:
      counts = {name.split("-of-")[1].split(".")[0].split("_")[0] for name in present
                if name.startswith("process_") and "-of-" in name}
      others = sorted(counts - {str(jax.process_count())})  # this count's files being there: lost ones
      if others:
        raise IteratorMismatchError(
            f"{directory}: the input iterators were saved by {' or '.join(others)} process(es), this run "
            f"has {jax.process_count()}; set --config.checkpoint.restore_data_iterator=False to resume "
            "the state and restart the input streams from the seed")
      found_instead = f"holds only {present}" if present else "holds no iterator file (lost or deleted)"
      raise FileNotFoundError(f"{directory}: no data iterator state for {prefix}: the directory "
                              f"{found_instead}")
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
