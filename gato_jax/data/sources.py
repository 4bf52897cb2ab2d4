"""The catalogue of a data_dir: which datasets it holds, their kinds, TaskSpecs and domains, link files.

A data_dir is its own catalogue. `discover_datasets(data_dir)` lists every finished dataset in it and
learns each one's kind, TaskSpec and domain from the dataset's own TFDS metadata (the builders in
data_pipelines/ write it), so training needs neither data_pipelines nor any simulator: a directory of
built datasets is enough. A foreign dataset read in place (e.g. an RLDS directory in a bucket) is a
link file `<data_dir>/<name>/gato_source.json` instead (`load_link` / `write_link` here; its episodes are
read by `gato_jax.data.foreign`). Reading one dataset's examples is `gato_jax.data.readers`' job.
"""

import dataclasses
import json
import os
import posixpath
from typing import Any, Mapping, Optional

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.episodes import TaskSpec

KINDS = ("control", "text", "captions")
LINK_FILE = "gato_source.json"  # a foreign dataset read in place (gato_jax.data.foreign reads it)
FORMATS = ("rlds",)
LINK_KEYS = ("format", "path", "kind", "task_spec", "mapping", "splits")


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
