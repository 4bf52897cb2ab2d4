"""RLDS / Open X-Embodiment: infer a mapping from the TFDS FeaturesDict and link the dataset in place.

    import_rlds("gs://gresearch/robotics/bridge/0.1.0", "bridge", data_dir,
                mapping={"image_size": [128, 128]})

Nothing is copied: `DATA_DIR/NAME/gato_source.json` records the dataset's path, the mapping and the
TaskSpec, and gato_jax.data.foreign streams the episodes from the original files. Step fields under
`observation/` keep their names; step-level text (`language_instruction`) becomes an observation text
field; `action` (a tensor, or a dict of tensors concatenated in key order) is the action, its bounds
[-1, 1] when the data stays inside, else the range seen in the first `scan_episodes` episodes
(clipped); precomputed language embeddings and `discount` are dropped. The final RLDS step holds only
the last observation, so it is dropped (override `last_step` for datasets whose last step acts).
"""

import os
import posixpath
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.data import foreign, sources
from gato_jax.data.mapping import EpisodeMapping, Leaf, infer

FLAGS = ("is_first", "is_last", "is_terminal", "discount")


def resolve_version_dir(path: str) -> str:
  """The folder holding dataset_info.json: `path` itself, else its newest version below (config/version).
  Local paths are made absolute (the link file must not depend on the working directory)."""
  path = path.rstrip("/") if "://" in path else os.path.abspath(os.path.expanduser(path))
  if tf.io.gfile.exists(posixpath.join(path, "dataset_info.json")):
    return path
  found = sorted(posixpath.dirname(p) for pattern in ("*/dataset_info.json", "*/*/dataset_info.json")
                 for p in tf.io.gfile.glob(posixpath.join(path, pattern)))
  if not found:
    raise FileNotFoundError(f"{path}: no TFDS dataset here (no dataset_info.json in it or two levels "
                            "below); give the folder of a dataset version, e.g. .../bridge/0.1.0")
  return found[-1]


def _flatten(tree, prefix: str = "") -> dict:
  if isinstance(tree, Mapping):
    return {p: v for k, sub in tree.items() for p, v in _flatten(sub, f"{prefix}{k}/").items()}
  return {prefix[:-1]: tree}


def step_leaves(builder, scan_episodes: int = 20) -> list[Leaf]:
  """The step fields the FeaturesDict declares, with the numeric ranges of the first episodes."""
  infos = _flatten(builder.info.features["steps"].feature.get_tensor_info())
  numeric = [p for p, i in infos.items() if i.tf_dtype != tf.string and len(i.shape) < 2]
  low, high = {}, {}
  skip = foreign.skip_decoders(builder.info.features)
  split = "train" if "train" in builder.info.splits else next(iter(builder.info.splits))
  ds = builder.as_dataset(split=split, decoders=skip).take(scan_episodes)
  for example in ds:
    for batch in example["steps"].batch(sources.MAX_EPISODE_STEPS).take(1):  # none for an empty episode
      values = _flatten(batch)
      for p in numeric:
        v = values[p].numpy()
        low[p] = min(low.get(p, np.inf), float(v.min()))
        high[p] = max(high.get(p, -np.inf), float(v.max()))
  leaves = []
  for p, info in sorted(infos.items()):
    dtype = "string" if info.tf_dtype == tf.string else np.dtype(info.np_dtype).name
    leaves.append(Leaf(p, dtype, tuple(info.shape), low=low.get(p), high=high.get(p)))
  return leaves


def infer_mapping(builder, overrides=None, scan_episodes: int = 20) -> EpisodeMapping:
  leaves = step_leaves(builder, scan_episodes)
  action = [l.path for l in leaves if l.path == "action" or l.path.startswith("action/")]
  if not action:
    raise ValueError(f"{builder.data_dir}: the steps have no 'action' field; fields: {[l.path for l in leaves]}")
  mapping = infer(leaves, action, reward="reward", ignore=FLAGS, last_step="drop",
                  strip_prefix="observation/")
  return mapping.with_overrides(overrides)


def default_splits(builder) -> dict:
  """train / validation: the dataset's own validation (val, test) split, else its last 5% (>= 1 episode)."""
  splits = builder.info.splits
  for name in ("validation", "val", "test"):
    if name in splits and "train" in splits:
      return {"train": "train", "validation": name}
  train = "train" if "train" in splits else next(iter(splits))
  n = splits[train].num_examples
  if n < 2:
    raise ValueError(f"{builder.data_dir}: split {train!r} has {n} episode(s); need 2 to hold one out")
  held = max(1, n // 20)
  return {"train": f"{train}[:{n - held}]", "validation": f"{train}[{n - held}:]"}


def inspect(path: str, overrides=None, name: str = "", scan_episodes: int = 20) -> str:
  """The inferred (and overridden) mapping of the RLDS dataset at `path`, as a table."""
  builder = tfds.builder_from_directory(resolve_version_dir(path))
  mapping = infer_mapping(builder, overrides, scan_episodes)
  return f"RLDS dataset {builder.data_dir} ({builder.info.splits})\n" + mapping.describe(name or builder.name)


def import_rlds(path: str, name: str, data_dir: str, mapping: Any = None, splits: Optional[dict] = None,
                domain: str = "rlds", scan_episodes: int = 20, check_episodes: int = 8) -> str:
  """Links the RLDS dataset at `path` as control dataset `name` of `data_dir` (no copy); returns the
  link file. `mapping`: overrides of the inferred mapping (dict, JSON text or a JSON file path).
  The first `check_episodes` episodes of each split are read through the mapping and checked before
  the link is written; the rest are checked as training streams them."""
  if sources.dataset_exists(name, data_dir):
    raise ValueError(f"dataset {name!r} is already built in {data_dir}; choose another name")
  version_dir = resolve_version_dir(path)
  builder = tfds.builder_from_directory(version_dir)
  episode_mapping = infer_mapping(builder, mapping, scan_episodes)
  spec = episode_mapping.task_spec(name)
  link = {"format": "rlds", "path": version_dir, "kind": "control", "domain": domain,
          "task_spec": spec.to_dict(), "mapping": episode_mapping.to_dict(),
          "splits": splits or default_splits(builder), "expert_return": None, "random_return": None,
          "description": f"RLDS dataset {builder.name} read in place from {version_dir}."}
  source = foreign.RldsSource(name, version_dir, episode_mapping, spec, link["splits"])
  for split in ("train", "validation"):
    try:
      for _ in source.get_dataset(split, shuffle=False).take(check_episodes):
        pass
    except tf.errors.OpError as e:
      message = (e.message[e.message.find("malformed episode"):] if "malformed episode" in e.message
                 else f"dataset {name!r}: {e.message}").splitlines()[0]
      raise ValueError(message) from None
  return foreign.write_link(data_dir, name, link)
