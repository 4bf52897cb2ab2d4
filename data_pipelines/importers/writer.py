"""Writes converted foreign episodes as a TFDS dataset of the data_dir (the on-disk contract of
control_builder), checking every episode with the episode validator first.

TFDS writes into a temporary `incomplete.*` folder and renames it when every split is written, so a
conversion that stops on a malformed episode leaves nothing that `gato-data list` or training reads.
"""

import os
import shutil
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import local_builder
from data_pipelines.local_builder import LocalBuilder
from gato_jax import episodes
from gato_jax.data import sources
from gato_jax.episodes import TaskSpec


class ForeignDataError(ValueError):
  """A foreign dataset that cannot be imported; the message names the dataset and what is wrong."""


def control_example(dataset: str, episode_id: Any, steps: Mapping[str, Any], spec: TaskSpec,
                    index: int) -> dict:
  """A mapped episode (observation, action, reward, flags as [T, ...]) checked by the validator and
  made a TFDS example; errors name the dataset, episode, step and field."""
  try:
    episodes.validate_episode({"steps": steps}, spec, episode_id=episode_id)
  except episodes.EpisodeError as e:
    raise episodes.EpisodeError(f"dataset {dataset!r}: {e}") from None
  return {"steps": dict(steps), "episode_return": np.float32(np.sum(steps["reward"], dtype=np.float64)),
          "episode_id": np.int64(index)}


def episode_flags(length: int, terminal: bool) -> dict:
  """is_first / is_last / is_terminal of an episode of `length` steps."""
  t = np.arange(length)
  return {"is_first": t == 0, "is_last": t == length - 1, "is_terminal": (t == length - 1) & bool(terminal)}


def write_dataset(name: str, data_dir: str, features, splits: Mapping[str, Callable[[], Iterable[dict]]],
                  metadata: Callable[[], dict], description: str):
  """Builds TFDS dataset `name` in data_dir from `splits` (split -> callable yielding examples); the
  metadata callable runs after every split is written (returns measured while writing)."""
  if sources.dataset_exists(name, data_dir):
    raise ForeignDataError(f"dataset {name!r} is already built in {sources.expand_data_dir(data_dir)}; "
                       "choose another name or delete it")

  class Importer(LocalBuilder, skip_registration=True):
    ZERO_MEANS_ALL = True

    def _info(self):
      return self._build_info(features, description)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(make) for split, make in splits.items()}

    def _generate_examples(self, make):
      for i, example in enumerate(make()):
        yield i, example

    def _finalize(self):
      self.build_metadata.update(metadata())

  Importer.name = name
  Importer.__module__ = __name__
  root = os.path.join(sources.expand_data_dir(data_dir), name)
  existed = os.path.exists(root)
  builder = Importer(data_dir=sources.expand_data_dir(data_dir), num_train=0, num_validation=1)
  try:
    local_builder.prepare(builder)
  except BaseException:
    if not existed:  # TFDS removed its incomplete.* folder; drop the empty dataset folder it leaves
      shutil.rmtree(root, ignore_errors=True)
    raise
  return builder


def returns_metadata(returns: Iterable[float]) -> dict:
  r = np.asarray(list(returns), np.float64)
  return {"dataset_return_mean": float(r.mean()) if r.size else float("nan"),
          "dataset_return_std": float(r.std()) if r.size else float("nan"), "episodes": int(r.size)}
