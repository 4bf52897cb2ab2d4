"""Datasets read in place from a foreign format (RLDS / Open X-Embodiment), found by a link file.

`DATA_DIR/NAME/gato_source.json` (written by `gato-data import --format=rlds`, see `sources.write_link`):
  {"format": "rlds", "path": local dir or gs:// of the TFDS dataset version (the folder holding
   dataset_info.json), "kind": "control", "domain", "task_spec": TaskSpec.to_dict(),
   "mapping": EpisodeMapping.to_dict(), "splits": {"train": TFDS split, "validation": TFDS split},
   "expert_return" / "random_return" (null when unknown), "description"}
`sources.read_ref` turns it into a DatasetRef (the data_dir's catalogue lists links too);
`make_source` into a seqio.DataSource whose episodes are exactly what `readers.EpisodeSource` yields:
dense [T, ...] steps in the TaskSpec's layout and an int64 `episode_id`. TensorFlow only reads and
batches the source steps; the mapping (`gato_jax.map_numpy.map_rlds_steps`) and the episode check
(`gato_jax.episodes.validate_episode`) are the NumPy ones every other path uses, run per episode through
tf.numpy_function. Processes read disjoint TFDS files (seqio ShardInfo -> the read config's input
context), or every n-th episode when a split has fewer files than processes (seqio's fallback).
"""

import posixpath
import zlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax import map_numpy
from gato_jax.data import readers, sources
from gato_jax.episodes import EpisodeError, TaskSpec, check_layout, validate_episode
from gato_jax.mapping import EpisodeMapping, get_path, nest


def make_source(ref: sources.DatasetRef, data_dir: str) -> seqio.DataSource:
  """The seqio.DataSource of a linked dataset (`ref.link`, else the link file in data_dir)."""
  link = ref.link or sources.load_link(data_dir, ref.name)
  if link is None:
    raise FileNotFoundError(f"dataset {ref.name!r}: not a linked dataset (no "
                            f"{sources.link_path(data_dir, ref.name)})")
  spec = ref.spec if ref.spec is not None else TaskSpec.from_dict(link["task_spec"])
  return RldsSource(ref.name, link["path"], EpisodeMapping.from_dict(link["mapping"]), spec, link["splits"])


class RldsSource(seqio.TfdsDataSource):
  """An RLDS TFDS dataset read in place (`tfds.builder_from_directory`), mapped to `spec`'s episodes."""

  def __init__(self, name: str, path: str, mapping: EpisodeMapping, spec: TaskSpec,
               splits: Mapping[str, str]):
    super().__init__(tfds_name=None, tfds_data_dir=path, splits=dict(splits), read_only=True)
    self.name, self.path, self.mapping, self.spec = name, path, mapping, spec
    self.split_map = dict(splits)  # canonical split -> TFDS split (or slice) of the RLDS dataset
    self._checked = False
    mapped = mapping.task_spec(name)  # a link whose mapping and TaskSpec disagree fails here, not per episode
    check_layout({p: () if f.modality == "text" else f.shape for p, f in mapped.observation_fields()},
                 mapped.action.shape, spec, f"dataset {name!r}: the link's mapping")

  def _check_sources(self) -> None:
    if self._checked:
      return
    step = self.tfds_dataset.builder.info.features["steps"].feature
    available = sorted(_leaf_paths(step.get_tensor_info()))
    missing = [p for p in self.mapping.sources() if p not in available]
    if missing:
      raise ValueError(f"dataset {self.name!r}: the mapping reads {missing}, which the RLDS dataset at "
                       f"{self.path} does not have; its step fields: {available}")
    self._checked = True

  def map_episode(self, raw: Mapping[str, Any], where: str) -> dict:
    """Dense source steps (NumPy) -> the episode's steps, mapped and checked; an EpisodeError names
    the episode (`where`), step and field."""
    try:
      steps = map_numpy.map_rlds_steps(self.mapping, raw)
    except ValueError as e:  # a source field with another step count than the reward's
      raise EpisodeError(f"{where}: {e}") from None
    validate_episode({"steps": steps}, self.spec, where=where)
    return steps

  def get_dataset(self, split: Optional[str] = None, shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, **kwargs) -> tf.data.Dataset:
    """Mapped, checked episodes (see foreign_episode)."""
    del seed, kwargs  # the file order is seeded by the name (see readers.TfdsSource)
    split = split or "train"
    return self.raw_dataset(split, shuffle, shard_info).map(
        lambda ex: foreign_episode(ex, self, split, ex["episode_id"]), num_parallel_calls=tf.data.AUTOTUNE)

  def raw_dataset(self, split: str, shuffle: bool = True,
                  shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
    """{"steps": the dense source steps, "episode_id": the episode's index in its TFDS split}."""
    if split not in self.split_map:
      raise ValueError(f"dataset {self.name!r}: no split {split!r}; the link maps {self.split_map}")
    self._check_sources()
    builder = self.tfds_dataset.builder
    read_config = tfds.ReadConfig(
        shuffle_seed=zlib.crc32(self.name.encode()), skip_prefetch=True, add_tfds_id=True,
        input_context=tf.distribute.InputContext(shard_info.num_shards, shard_info.index)
        if shard_info else None)
    ds = builder.as_dataset(split=self.split_map[split], shuffle_files=shuffle, read_config=read_config,
                            decoders=skip_decoders(builder.info.features, self.mapping.sources()))
    index = episode_index_fn(builder)
    return ds.map(tf.autograph.experimental.do_not_convert(
        lambda ex: {"steps": readers.dense_steps(ex["steps"]), "episode_id": index(ex["tfds_id"])}),
                  num_parallel_calls=tf.data.AUTOTUNE)


def episode_index_fn(builder):
  """tfds_id (`<file>__<record>`) -> the episode's index in its TFDS split (file offsets from the
  split's shard lengths), which is how errors name an episode (a record id means nothing to a user)."""
  keys, offsets = [], []
  for info in builder.info.splits.values():
    start = 0
    for filename, length in zip(info.filenames, info.shard_lengths):
      keys.append(posixpath.basename(filename))
      offsets.append(start)
      start += int(length)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.constant(offsets, tf.int64)), -1)

  def index(tfds_id):
    parts = tf.strings.split(tfds_id, "__")
    return table.lookup(parts[0]) + tf.strings.to_number(parts[-1], tf.int64)
  return index


def _leaf_paths(tree, prefix: str = "") -> list[str]:
  if isinstance(tree, Mapping):
    return [p for k, v in tree.items() for p in _leaf_paths(v, f"{prefix}{k}/")]
  return [prefix[:-1]]


def skip_decoders(features, used: Sequence[str] = ()) -> Optional[dict]:
  """SkipDecoding for every step image not in `used` (OXE datasets carry several cameras), and for
  images of undeclared size (frames of different sizes do not batch; map_numpy.map_image decodes them)."""
  used = set(used)

  def walk(feature, prefix):
    out = {}
    for key, sub in feature.items():
      path = f"{prefix}{key}"
      if isinstance(sub, tfds.features.FeaturesDict):
        inner = walk(sub, path + "/")
        if inner:
          out[key] = inner
      elif isinstance(sub, tfds.features.Image) and (path not in used or None in tuple(sub.shape)[:2]):
        out[key] = tfds.decode.SkipDecoding()  # unused, or of undeclared size: decoded frame by frame
    return out

  steps = walk(features["steps"].feature, "")
  return {"steps": steps} if steps else None


def episode_layout(spec: TaskSpec) -> list[tuple[str, tf.TensorSpec]]:
  """(path in the steps dict, TensorSpec) of every field of `spec`'s dense episodes, in a fixed order."""
  dtype = {"text": tf.string, "image": tf.uint8, "discrete": tf.int32, "continuous": tf.float32}
  fields = [(f"observation/{p}", tf.TensorSpec([None, *f.shape], dtype[f.modality]))
            for p, f in spec.observation_fields()]
  action = tf.float32 if spec.action.kind == "continuous" else tf.int32
  return fields + [("action", tf.TensorSpec([None, *spec.action.shape], action)),
                   ("reward", tf.TensorSpec([None], tf.float32))] + [
                       (k, tf.TensorSpec([None], tf.bool)) for k in ("is_first", "is_last", "is_terminal")]


@tf.autograph.experimental.do_not_convert
def foreign_episode(example: Mapping[str, Any], source: RldsSource, split: str, index) -> dict:
  """{"steps": dense source steps} -> {"steps": dense checked steps in the spec's layout, "episode_id":
  its index}: the NumPy mapping and episode check (RldsSource.map_episode), per episode."""
  raw = example["steps"]
  skeleton = tf.nest.map_structure(lambda _: None, raw)
  layout = episode_layout(source.spec)

  def apply(i, *arrays):
    steps = source.map_episode(tf.nest.pack_sequence_as(skeleton, list(arrays)),
                               readers.episode_where(source.name, split, i))
    return [np.asarray(_encode(get_path(steps, path)), s.dtype.as_numpy_dtype) for path, s in layout]

  values = tf.numpy_function(apply, [index, *tf.nest.flatten(raw)], [s.dtype for _, s in layout],
                             stateful=False, name="map_episode")  # stateless: see readers.check_episode
  for value, (_, s) in zip(values, layout):
    value.set_shape(s.shape)
  # The index in the split is distinct per episode, which prompt pairing needs of an episode_id.
  return {"steps": nest((path, value) for value, (path, _) in zip(values, layout)), "episode_id": index}


def _encode(value):
  """Text fields as UTF-8 bytes (what a tf.string carries); anything else as it is."""
  return [v.encode("utf-8") for v in value] if isinstance(value, list) else value
