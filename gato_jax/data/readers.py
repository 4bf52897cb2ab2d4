"""Reading one dataset of a data_dir: seqio DataSources, control episodes made dense and checked as they stream.

Control episodes are read with `EpisodeSource`: the RLDS `steps` Dataset of each episode becomes dense
[T, ...] tensors (`dense_steps`), laid out as the TaskSpec says (`check_structure`, when the pipeline is
built) and checked episode by episode by `gato_jax.episodes.validate_episode` itself (`check_episode`,
through tf.numpy_function), so the one NumPy check names the dataset, split, episode, step and field.
Which datasets a data_dir holds is `gato_jax.data.sources`' business; linked foreign datasets are read
by `gato_jax.data.foreign`.
"""

import zlib
from typing import Any, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from gato_jax.data import sources
from gato_jax.episodes import TaskSpec, check_layout, validate_episode

MAX_EPISODE_STEPS = 1 << 30  # batch size that turns a whole `steps` Dataset into one dense batch
MALFORMED = "malformed episode:"  # how every streaming check's message starts (malformed_episode_line)


class TfdsSource(seqio.TfdsDataSource):
  """A read-only TfdsDataSource of a data_dir's dataset whose file order is seeded by the dataset name.

  Every process then reads a split's files in the same order, whatever its seed: seqio's
  example-level sharding (a split with fewer files than processes) stays disjoint and covering, and
  processes may use different seeds for everything downstream (shuffle buffers, windows, prompts).
  """

  def __init__(self, name: str, data_dir: str):
    super().__init__(tfds_name=sources.tfds_name(name), tfds_data_dir=sources.expand_data_dir(data_dir),
                     splits=("train", "validation"), read_only=True)
    self.name = name

  def get_dataset(self, split: Optional[str] = None, shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, **kwargs) -> tf.data.Dataset:
    del seed  # see the class docstring
    return super().get_dataset(split=split or "train", shuffle=shuffle, seed=zlib.crc32(self.name.encode()),
                               shard_info=shard_info, **kwargs)


class EpisodeSource(TfdsSource):
  """Control episodes: dense checked steps (see dense_episode)."""

  def __init__(self, name: str, data_dir: str, spec: TaskSpec):
    super().__init__(name, data_dir)
    self.spec = spec

  def get_dataset(self, split: Optional[str] = None, **kwargs) -> tf.data.Dataset:
    split = split or "train"
    ds = super().get_dataset(split=split, **kwargs)
    return ds.map(lambda ex: dense_episode(ex, self.spec, self.name, split),
                  num_parallel_calls=tf.data.AUTOTUNE)


def dense_steps(steps_ds: tf.data.Dataset) -> dict:
  """An episode's `steps` Dataset as one dict of [T, ...] tensors (T may be 0)."""
  # The appended zero-length batch keeps empty episodes readable, so that the episode check can name
  # them instead of tf.data failing on an empty dataset.
  empty = tf.nest.map_structure(lambda s: tf.zeros([0] + s.shape.as_list(), s.dtype), steps_ds.element_spec)
  return steps_ds.batch(MAX_EPISODE_STEPS).concatenate(
      tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()


@tf.autograph.experimental.do_not_convert
def dense_episode(example: Mapping[str, Any], spec: TaskSpec, dataset: str, split: str) -> dict:
  """{"steps": Dataset of steps, "episode_id", ...} -> {"steps": dense [T, ...] tensors, "episode_id"}."""
  check_structure(example["steps"].element_spec, spec, dataset)
  steps = dense_steps(example["steps"])
  episode_id = tf.cast(example.get("episode_id", tf.constant(-1, tf.int64)), tf.int64)
  return {"steps": check_episode(steps, spec, dataset, split, episode_id), "episode_id": episode_id}


def check_structure(element_spec: Mapping[str, Any], spec: TaskSpec, dataset: str) -> None:
  """episodes.check_layout on the steps' TensorSpecs, when the pipeline is built: a dataset whose
  fields or shapes disagree with its TaskSpec fails before any episode is read."""
  where = f"dataset {dataset!r}"
  for key in ("observation", "action"):
    if key not in element_spec:
      raise ValueError(f"{where}: steps have no {key!r} feature; expected the RLDS step keys "
                       "observation, action, reward, is_first, is_last, is_terminal")
  shapes = {"/".join(map(str, path)): tuple(s.shape.as_list())
            for path, s in _flatten_with_paths(element_spec["observation"])}
  try:
    check_layout(shapes, tuple(element_spec["action"].shape.as_list()), spec, where)
  except ValueError as e:  # as a plain ValueError: autograph passes those through, subclasses it buries
    raise ValueError(str(e)) from None


def _flatten_with_paths(tree, prefix=()):
  if isinstance(tree, Mapping):
    for key in sorted(tree):
      yield from _flatten_with_paths(tree[key], prefix + (key,))
  else:
    yield prefix, tree


def episode_where(dataset: str, split: str, episode_id) -> str:
  """How the streaming checks name an episode: "malformed episode: dataset d, split s, episode 9"."""
  return f"{MALFORMED} dataset {dataset}, split {split}, episode {int(episode_id)}"


def check_episode(steps: Mapping[str, Any], spec: TaskSpec, dataset: str, split: str, episode_id) -> dict:
  """validate_episode on each dense episode as it streams; returns the steps, whose reward comes out of
  the check, so nothing downstream runs on an episode that has not passed."""
  steps = dict(steps)
  skeleton = tf.nest.map_structure(lambda _: None, steps)

  def check(index, *arrays):
    episode = {"steps": tf.nest.pack_sequence_as(skeleton, list(arrays))}
    validate_episode(episode, spec, where=episode_where(dataset, split, index))
    return episode["steps"]["reward"]

  # Stateless (the check only reads its inputs) lets tf.data optimise the map as before (a stateful
  # function costs ~20% of the pipeline's throughput); the data dependency keeps it from being pruned.
  reward = tf.numpy_function(check, [episode_id, *tf.nest.flatten(steps)], steps["reward"].dtype,
                             stateful=False, name="validate_episode")
  reward.set_shape(steps["reward"].shape)
  return {**steps, "reward": reward}


def malformed_episode_line(error: BaseException) -> Optional[str]:
  """The streaming check's failure as its one line ("malformed episode: dataset d, split s, episode 9,
  step 1: field 'f': what was expected"), without tf.data's prefix and the Python traceback; None for
  any other error."""
  text = str(getattr(error, "message", error))
  start = text.find(MALFORMED)
  if start < 0:
    return None
  return text[start:].splitlines()[0].strip()
