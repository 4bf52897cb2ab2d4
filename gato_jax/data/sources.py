"""Where the SeqIO tasks read from: the datasets found in a data_dir, TFDS sources, episode checks.

A data_dir is its own catalogue. `discover_datasets(data_dir)` lists every finished dataset in it and
learns each one's kind, TaskSpec and domain from the dataset's own TFDS metadata (the builders in
data_pipelines/ write it), so training needs neither data_pipelines nor any simulator: a directory of
built datasets is enough. A foreign dataset read in place (e.g. an RLDS directory in a bucket) is a
link file `<data_dir>/<name>/gato_source.json` instead (`load_link` / `write_link` here; its episodes are
read by `gato_jax.data.foreign`).

Control episodes are read with `EpisodeSource`: the RLDS `steps` Dataset of each episode becomes dense
[T, ...] tensors, checked against the spec (empty episode, shapes, NaN, values and actions outside
their ranges) with errors naming the dataset, split, episode id and field.
"""

import dataclasses
import json
import os
import posixpath
import zlib
from typing import Any, Mapping, Optional

from absl import logging
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.episodes import TaskSpec, get_path

KINDS = ("control", "text", "captions")
LINK_FILE = "gato_source.json"  # a foreign dataset read in place (gato_jax.data.foreign reads it)
FORMATS = ("rlds",)
LINK_KEYS = ("format", "path", "kind", "task_spec", "mapping", "splits")
MAX_EPISODE_STEPS = 1 << 30  # batch size that turns a whole `steps` Dataset into one dense batch


@dataclasses.dataclass(frozen=True)
class DatasetRef:
  """What the SeqIO side needs to know about one dataset of the data_dir.

  spec: control only; None reads `task_spec` from the dataset's metadata when the task is made.
  domain: the family it reports under (babyai, metaworld, text, ...), for per-domain mixtures.
  link: the parsed link file of a foreign dataset read in place (None: a TFDS dataset of the data_dir).
  """
  name: str
  kind: str  # control | text | captions
  spec: Optional[TaskSpec] = None
  domain: str = ""
  link: Optional[Mapping[str, Any]] = dataclasses.field(default=None, hash=False)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")


def expand_data_dir(data_dir: str) -> str:
  return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def _version_key(version: str) -> tuple:
  try:
    return tuple(int(p) for p in version.split("."))
  except ValueError:
    return (-1,)


def dataset_version_dir(name: str, data_dir: str) -> Optional[str]:
  """The newest finished version directory of dataset `name` in data_dir (TFDS writes
  dataset_info.json last), or None."""
  root = os.path.join(expand_data_dir(data_dir), name)
  if not tf.io.gfile.isdir(root):
    return None
  versions = [v.rstrip("/") for v in tf.io.gfile.listdir(root)]
  done = [v for v in versions if tf.io.gfile.exists(os.path.join(root, v, "dataset_info.json"))]
  return os.path.join(root, max(done, key=_version_key)) if done else None


def dataset_exists(name: str, data_dir: str) -> bool:
  """True when a finished TFDS dataset `name` (any version), or a foreign link, is in data_dir."""
  return (dataset_version_dir(name, data_dir) is not None
          or tf.io.gfile.exists(os.path.join(expand_data_dir(data_dir), name, LINK_FILE)))


def require_dataset(name: str, data_dir: str, context: str = "") -> None:
  if not dataset_exists(name, data_dir):
    raise FileNotFoundError(
        f"{context}dataset {name!r} is not built in {expand_data_dir(data_dir)}: run `gato-data build "
        f"--dataset={name} --data_dir={data_dir}` (or drop it from the mixture)")


def read_metadata(name: str, data_dir: str, version_dir: Optional[str] = None) -> dict:
  """The metadata the dataset's builder recorded (metadata.json beside dataset_info.json)."""
  version_dir = version_dir or dataset_version_dir(name, data_dir)
  if version_dir is None:
    require_dataset(name, data_dir)
    return {}
  path = os.path.join(version_dir, "metadata.json")
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def kind_of(name: str, metadata: Mapping[str, Any]) -> Optional[str]:
  """metadata["kind"]; datasets built before it was recorded are recognised by their contents."""
  if metadata.get("kind") in KINDS:
    return metadata["kind"]
  if "task_spec" in metadata:
    return "control"
  return name if name in ("text", "captions") else None


def discover_datasets(data_dir: str) -> dict[str, DatasetRef]:
  """Every dataset of the data_dir by name, with its kind, TaskSpec and domain from its metadata."""
  root = expand_data_dir(data_dir)
  if not tf.io.gfile.isdir(root):
    return {}
  refs = {}
  for name in sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)):
    if tf.io.gfile.exists(os.path.join(root, name, LINK_FILE)):
      refs[name] = read_ref(root, name)
      continue
    version_dir = dataset_version_dir(name, root)
    if version_dir is None:
      continue  # not a dataset (the SentencePiece folder), or a build that never finished
    metadata = read_metadata(name, root, version_dir)
    kind = kind_of(name, metadata)
    if kind is None:
      logging.warning("data_dir %s: %r is a TFDS dataset without a gato kind in its metadata; skipped",
                      root, name)
      continue
    spec = TaskSpec.from_dict(metadata["task_spec"]) if kind == "control" else None
    refs[name] = DatasetRef(name, kind, spec, str(metadata.get("domain", "") or kind))
  return refs


def link_path(data_dir: str, name: str) -> str:
  return posixpath.join(expand_data_dir(data_dir), name, LINK_FILE)


def load_link(data_dir: str, name: str) -> Optional[dict]:
  """The parsed link file of `name`, or None when `name` is not a linked dataset."""
  path = link_path(data_dir, name)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    try:
      link = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"dataset {name!r}: {path} is not valid JSON ({e}); re-run gato-data import") from None
  missing = [k for k in LINK_KEYS if k not in link]
  if missing or link["format"] not in FORMATS:
    raise ValueError(f"dataset {name!r}: {path} lacks {missing} or has format {link.get('format')!r}; "
                     f"expected keys {list(LINK_KEYS)} and a format in {FORMATS}")
  return link


def write_link(data_dir: str, name: str, link: Mapping[str, Any]) -> str:
  """Writes the link file whole or not at all (a temporary file renamed over it)."""
  missing = [k for k in LINK_KEYS if k not in link]
  if missing:
    raise ValueError(f"dataset {name!r}: a link needs {missing}")
  path = link_path(data_dir, name)
  tf.io.gfile.makedirs(posixpath.dirname(path))
  tmp = f"{path}.tmp.{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(dict(link), f, indent=1, sort_keys=True)
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path


def read_ref(data_dir: str, name: str) -> DatasetRef:
  """The DatasetRef of a linked dataset (its TaskSpec and link come from the link file)."""
  link = load_link(data_dir, name)
  if link is None:
    raise FileNotFoundError(f"dataset {name!r}: no {LINK_FILE} in {expand_data_dir(data_dir)}/{name}")
  spec = TaskSpec.from_dict(link["task_spec"]) if link["kind"] == "control" else None
  return DatasetRef(name, link["kind"], spec, str(link.get("domain") or link["format"]), link=link)


def tfds_name(name: str) -> str:
  """The newest version of `name` in the data_dir; a version makes TFDS read the dataset from its
  files (no builder code, no download, no generation)."""
  return f"{name}:*.*.*"


def read_builder(name: str, data_dir: str):
  """The TFDS builder of a finished dataset, read from its files."""
  require_dataset(name, data_dir)
  return tfds.builder(tfds_name(name), data_dir=expand_data_dir(data_dir))


def read_task_spec(name: str, data_dir: str) -> TaskSpec:
  metadata = read_metadata(name, data_dir)
  if "task_spec" not in metadata:
    raise ValueError(f"dataset {name!r} in {data_dir}: its metadata has no 'task_spec'; a control dataset "
                     "records TaskSpec.to_dict() there")
  return TaskSpec.from_dict(metadata["task_spec"])


class TfdsSource(seqio.TfdsDataSource):
  """A read-only TfdsDataSource of a data_dir's dataset whose file order is seeded by the dataset name.

  Every process then reads a split's files in the same order, whatever its seed: seqio's
  example-level sharding (a split with fewer files than processes) stays disjoint and covering, and
  processes may use different seeds for everything downstream (shuffle buffers, windows, prompts).
  """

  def __init__(self, name: str, data_dir: str):
    super().__init__(tfds_name=tfds_name(name), tfds_data_dir=expand_data_dir(data_dir),
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


@tf.autograph.experimental.do_not_convert
def dense_episode(example: Mapping[str, Any], spec: TaskSpec, dataset: str, split: str) -> dict:
  """{"steps": Dataset of steps, "episode_id", ...} -> {"steps": dense [T, ...] tensors, "episode_id"}."""
  steps_ds = example["steps"]
  check_structure(steps_ds.element_spec, spec, dataset)
  # One dense batch of every step; the appended zero-length batch keeps empty episodes readable, so
  # that check_episode can name them instead of tf.data failing on an empty dataset.
  empty = tf.nest.map_structure(lambda s: tf.zeros([0] + s.shape.as_list(), s.dtype), steps_ds.element_spec)
  steps = steps_ds.batch(MAX_EPISODE_STEPS).concatenate(
      tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()
  episode_id = tf.cast(example.get("episode_id", tf.constant(-1, tf.int64)), tf.int64)
  steps = check_episode(steps, spec, dataset, split, episode_id)
  return {"steps": steps, "episode_id": episode_id}


def check_structure(element_spec: Mapping[str, Any], spec: TaskSpec, dataset: str) -> None:
  """Static checks (at pipeline construction): observation keys, shapes and the action's shape."""
  where = f"dataset {dataset!r}"
  for key in ("observation", "action"):
    if key not in element_spec:
      raise ValueError(f"{where}: steps have no {key!r} feature; expected the RLDS step keys "
                       "observation, action, reward, is_first, is_last, is_terminal")
  observation = element_spec["observation"]
  expected = {p for p, _ in spec.observation_fields()}
  present = {"/".join(map(str, path)) for path, _ in _flatten_with_paths(observation)}
  if present != expected:
    raise ValueError(f"{where}: field 'observation': missing {sorted(expected - present)}, unexpected "
                     f"{sorted(present - expected)}; the TaskSpec {spec.name!r} expects {sorted(expected)}")
  for path, field in spec.observation_fields():
    got = get_path(observation, path)
    want = () if field.modality == "text" else field.shape
    if tuple(got.shape.as_list()) != want:
      raise ValueError(f"{where}: field 'observation/{path}': per-step shape {tuple(got.shape.as_list())}, "
                       f"expected {want} ({field.modality})")
  action_shape = tuple(element_spec["action"].shape.as_list())
  if action_shape != spec.action.shape:
    raise ValueError(f"{where}: field 'action': per-step shape {action_shape}, expected {spec.action.shape}")


def _flatten_with_paths(tree, prefix=()):
  if isinstance(tree, Mapping):
    for key in sorted(tree):
      yield from _flatten_with_paths(tree[key], prefix + (key,))
  else:
    yield prefix, tree


def _first_bad_step(bad):
  rows = tf.reduce_any(tf.reshape(bad, [tf.shape(bad)[0], -1]), axis=1)
  return tf.argmax(tf.cast(rows, tf.int32), output_type=tf.int32)


def _assert_none(bad, prefix: str, field: str, expected: str, episode_id):
  """Asserts no True in `bad` ([T, ...]); the error names the episode, first bad step and the field."""
  bad = tf.convert_to_tensor(bad)
  return tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                             [prefix, "episode", episode_id, "step", _first_bad_step(bad),
                              f"field {field}: {expected}"], summarize=4)


def malformed_episode_line(error: BaseException) -> Optional[str]:
  """The failure of check_episode's in-graph assertions as one line ("malformed episode: dataset d,
  split s, episode 9, step 1, field f: what was expected"), without tf.Assert's brackets, node names
  and traceback; None for any other error."""
  text = str(getattr(error, "message", error))
  start = text.find("[malformed episode:")
  if start < 0:
    return None
  parts = text[start:].splitlines()[0].strip()[1:-1].split("] [")
  head, rest = parts[0].rstrip(","), parts[1:]
  field = rest.pop() if rest and rest[-1].startswith("field ") else ""
  pairs = [f"{rest[i]} {rest[i + 1]}" for i in range(0, len(rest) - 1, 2)]
  return ", ".join([head] + pairs + ([field] if field else []))


def check_episode(steps: Mapping[str, Any], spec: TaskSpec, dataset: str, split: str, episode_id) -> dict:
  """Dynamic checks of dense steps; returns the steps with the assertions attached."""
  # No quotes in these messages: tf.debugging.Assert escapes them in the error it raises.
  prefix = f"malformed episode: dataset {dataset}, split {split},"
  action = steps["action"]
  num_steps = tf.shape(action)[0]
  checks = [tf.debugging.Assert(num_steps > 0, [prefix, "episode", episode_id,
                                                "field steps: the episode is empty; expected >= 1 step"])]
  for path, field in spec.observation_fields():
    value = get_path(steps["observation"], path)
    name = f"observation/{path}"
    if field.modality == "continuous":
      checks.append(_assert_none(~tf.math.is_finite(tf.cast(value, tf.float64)), prefix, name,
                                 "non-finite value (NaN or inf); expected finite floats", episode_id))
    elif field.modality == "discrete":
      value = tf.cast(value, tf.int64)
      checks.append(_assert_none((value < 0) | (value >= field.num_values), prefix, name,
                                 f"value outside [0, {field.num_values})", episode_id))
  a = spec.action
  flat = tf.reshape(action, [num_steps, a.size])
  if a.kind == "continuous":
    x = tf.cast(flat, tf.float64)
    outside = (~tf.math.is_finite(x)) | (x < tf.constant(a.low, tf.float64) - 1e-6) | (
        x > tf.constant(a.high, tf.float64) + 1e-6)
    expected = f"outside the action space; expected finite floats in [{list(a.low)}, {list(a.high)}]"
  else:
    x = tf.cast(flat, tf.int64)
    outside = (x < 0) | (x >= tf.constant(a.num_values, tf.int64))
    expected = f"outside the action space; expected integers in [0, {list(a.num_values)})"
  checks.append(_assert_none(outside, prefix, "action", expected, episode_id))
  with tf.control_dependencies(checks):
    return tf.nest.map_structure(tf.identity, dict(steps))
