"""Datasets read in place from a foreign format (RLDS / Open X-Embodiment), found by a link file.

`DATA_DIR/NAME/gato_source.json` (written by `gato-data import --format=rlds`, see `sources.write_link`):
  {"format": "rlds", "path": local dir or gs:// of the TFDS dataset version (the folder holding
   dataset_info.json), "kind": "control", "domain", "task_spec": TaskSpec.to_dict(),
   "mapping": EpisodeMapping.to_dict(), "splits": {"train": TFDS split, "validation": TFDS split},
   "expert_return" / "random_return" (null when unknown), "description"}
`sources.read_ref` turns it into a DatasetRef (the data_dir's catalogue lists links too);
`make_source` into a seqio.DataSource whose episodes are exactly
what `sources.EpisodeSource` yields: dense [T, ...] steps in the TaskSpec's layout, checked with
`sources.check_structure` / `check_episode`, and an int64 `episode_id`. Processes read disjoint TFDS
files (seqio ShardInfo -> the read config's input context), or every n-th episode when a split has
fewer files than processes (seqio's fallback).
"""

import posixpath
import zlib
from typing import Any, Mapping, Optional, Sequence

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.data import sources
from gato_jax.mapping import EpisodeMapping, FieldMap, get_path, nest
from gato_jax.episodes import TaskSpec

def make_source(ref: sources.DatasetRef, data_dir: str) -> seqio.DataSource:
  """The seqio.DataSource of a linked dataset (`ref.link`, else the link file in data_dir)."""
  link = getattr(ref, "link", None) or load_link(data_dir, ref.name)
  if link is None:
    raise FileNotFoundError(f"dataset {ref.name!r}: not a linked dataset (no {link_path(data_dir, ref.name)})")
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

  def get_dataset(self, split: Optional[str] = None, shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, checked: bool = True,
                  **kwargs) -> tf.data.Dataset:
    """Mapped episodes; `checked=False` leaves out the in-graph checks (the importer validates every
    episode in NumPy instead, with one-line errors)."""
    del seed, kwargs  # the file order is seeded by the name (see sources.TfdsSource)
    split = split or "train"
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
    return ds.map(lambda ex: foreign_episode(ex, self.mapping, self.spec, self.name, split, index(ex["tfds_id"]),
                                             checked), num_parallel_calls=tf.data.AUTOTUNE)


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
  images of undeclared size (frames of different sizes do not batch; map_encoded_frames decodes them)."""
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


@tf.autograph.experimental.do_not_convert
def foreign_episode(example: Mapping[str, Any], mapping: EpisodeMapping, spec: TaskSpec, dataset: str,
                    split: str, index, checked: bool = True) -> dict:
  """An RLDS episode -> {"steps": dense (checked) steps in spec's layout, "episode_id": its index}."""
  steps_ds = example["steps"]
  empty = tf.nest.map_structure(lambda s: tf.zeros([0] + s.shape.as_list(), s.dtype), steps_ds.element_spec)
  raw = steps_ds.batch(sources.MAX_EPISODE_STEPS).concatenate(
      tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()
  steps = map_steps_tf(mapping, raw)
  sources.check_structure(tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype), steps),
                          spec, dataset)
  # The index in the split is distinct per episode, which prompt pairing needs of an episode_id.
  return {"steps": sources.check_episode(steps, spec, dataset, split, index) if checked else steps,
          "episode_id": index}


def map_image_tf(frames: tf.Tensor, field: FieldMap) -> tf.Tensor:
  """[T, H, W(, C)] uint8 -> [T, h, w, 3] uint8 (mapping.map_image in TensorFlow)."""
  if frames.shape.rank == 3:
    frames = frames[..., None]
  frames = {"rgb": lambda x: x, "gray": lambda x: tf.repeat(x[..., :1], 3, -1),
            "last": lambda x: tf.repeat(x[..., -1:], 3, -1), "drop_alpha": lambda x: x[..., :3]}[
                field.channels](frames)
  height, width = field.shape[:2]
  if tuple(frames.shape[1:3]) == (height, width):
    return tf.cast(frames, tf.uint8)
  if field.image_policy == "resize":
    resized = tf.image.resize(tf.cast(frames, tf.float32), (height, width), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  return tf.image.resize_with_crop_or_pad(tf.cast(frames, tf.uint8), height, width)


def map_encoded_frames(encoded: tf.Tensor, field: FieldMap) -> tf.Tensor:
  """[T] encoded frames of undeclared, possibly varying size (left undecoded by skip_decoders, so the
  steps batch) -> [T, h, w, 3] uint8, each decoded and mapped on its own."""
  def one(frame):
    return map_image_tf(tf.io.decode_image(frame, channels=3 if field.channels == "rgb" else 0,
                                           expand_animations=False)[None], field)[0]
  return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(field.shape, tf.uint8))


def map_steps_tf(mapping: EpisodeMapping, raw: Mapping[str, Any]) -> dict:
  """Dense source steps -> the episode format (mapping.map_steps in TensorFlow), last step dropped
  when the mapping says the final RLDS step holds only the last observation."""
  length = tf.shape(raw["is_first"])[0]

  def field_value(field: FieldMap):
    value = get_path(raw, field.source)
    if field.modality == "image" and value.dtype == tf.string:
      return map_encoded_frames(value, field)
    if field.modality == "image":
      return map_image_tf(value, field)
    if field.modality == "text":
      return value
    dtype = tf.int32 if field.modality == "discrete" else tf.float32
    return tf.reshape(tf.cast(value, dtype), [length, *field.shape])  # a list: () is a scalar field's shape

  observation = nest((target, field_value(field)) for target, field in mapping.observation.items())
  a = mapping.action
  dtype = tf.float32 if a.kind == "continuous" else tf.int32
  flat = tf.concat([tf.reshape(tf.cast(get_path(raw, p), dtype), [length, -1]) for p in a.sources], 1)
  if a.clip:
    flat = tf.clip_by_value(flat, tf.constant(a.low, tf.float32), tf.constant(a.high, tf.float32))
  steps = {"observation": observation, "action": tf.reshape(flat, [length, *a.shape]),
           "reward": (tf.reshape(tf.cast(get_path(raw, mapping.reward), tf.float32), [length])
                      if mapping.reward else tf.zeros([length], tf.float32))}
  for key in ("is_first", "is_last", "is_terminal"):
    steps[key] = tf.cast(raw[key], tf.bool)
  if mapping.last_step == "drop":
    terminal = tf.reduce_any(raw["is_terminal"][-1:])
    steps = tf.nest.map_structure(lambda t: t[:-1], steps)
    keep = tf.shape(steps["reward"])[0]
    last = tf.one_hot(keep - 1, keep, on_value=True, off_value=False)
    steps["is_last"] = steps["is_last"] | last
    steps["is_terminal"] = steps["is_terminal"] | (last & terminal)
  return steps
