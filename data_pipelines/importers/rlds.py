"""RLDS / Open X-Embodiment: infer a mapping from the TFDS FeaturesDict and link the dataset in place.

    import_rlds("gs://gresearch/robotics/bridge/0.1.0", "bridge", data_dir,
                mapping={"image_size": [128, 128]})

Nothing is copied: `DATA_DIR/NAME/gato_source.json` records the dataset's path, the mapping and the
TaskSpec, and gato_jax.data.foreign streams the episodes from the original files. Step fields under
`observation/` keep their names; step-level text (`language_instruction`) becomes an observation text
field; `action` (a tensor, or a dict of tensors concatenated in key order) is the action, its bounds
per element [-1, 1] where the data stays inside, else the range seen in the first `scan_episodes`
episodes (clipped); precomputed language embeddings and `discount` are dropped. The final RLDS step
holds only the last observation, so it is dropped (override `last_step` for datasets whose last step
acts). Scalar and bool fields become (), images declared (None, None, C) are mapped frame by frame
(`resize` to the first frame's size rounded up to 16, or `--image_size`). Every episode is validated
before the link is written.
"""

import os
import posixpath
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.data import foreign, readers, sources
from gato_jax.mapping import EpisodeMapping, Leaf, infer
from gato_jax.episodes import PATCH_SIZE

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


def _image_paths(features, prefix: str = "") -> list[str]:
  return [p for key, sub in features.items()
          for p in (_image_paths(sub, f"{prefix}{key}/") if isinstance(sub, tfds.features.FeaturesDict)
                    else [f"{prefix}{key}"] if isinstance(sub, tfds.features.Image) else [])]


def step_leaves(builder, scan_episodes: int = 20) -> list[Leaf]:
  """The step fields the FeaturesDict declares, with the per-element numeric ranges of the first
  episodes; an image of undeclared size (None, None, C) gets the size of its first frame."""
  step_features = builder.info.features["steps"].feature
  infos = _flatten(step_features.get_tensor_info())
  numeric = [p for p, i in infos.items() if i.tf_dtype != tf.string and len(i.shape) < 2]
  unsized = [p for p in _image_paths(step_features) if None in tuple(infos[p].shape)[:2]]
  low, high, sample = {}, {}, {}
  skip = foreign.skip_decoders(builder.info.features)
  split = "train" if "train" in builder.info.splits else next(iter(builder.info.splits))
  ds = builder.as_dataset(split=split, decoders=skip).take(scan_episodes)
  for example in ds:
    for batch in example["steps"].batch(readers.MAX_EPISODE_STEPS).take(1):  # none for an empty episode
      values = _flatten(batch)
      for p in numeric:
        v = values[p].numpy().astype(np.float64)
        v = np.where(np.isfinite(v), v, np.nan).reshape(len(v), -1)  # fmin / fmax skip NaN: a bad value
        low[p] = np.fmin(low.get(p, np.nan), np.fmin.reduce(v, 0))  # is the validator's to name, not
        high[p] = np.fmax(high.get(p, np.nan), np.fmax.reduce(v, 0))  # the bounds' to absorb
      for p in unsized:
        if p not in sample:  # skipped decoding: the encoded bytes of each frame
          sample[p] = tuple(tf.io.decode_image(values[p][0], expand_animations=False).shape)
  leaves = []
  for p, info in sorted(infos.items()):
    dtype = "string" if info.tf_dtype == tf.string else np.dtype(info.np_dtype).name
    bounds = {k: tuple(float(x) for x in d[p]) for k, d in (("low", low), ("high", high)) if p in d}
    if p in unsized:
      shape = sample.get(p) or (PATCH_SIZE, PATCH_SIZE, info.shape[-1])
      leaves.append(Leaf(p, dtype, shape, sized=False))
    else:
      leaves.append(Leaf(p, dtype, tuple(info.shape), **bounds))
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


def check_episodes_of(source: foreign.RldsSource, split: str, limit: Optional[int] = None) -> int:
  """Reads `split` through the mapping and validates every episode (the first `limit` when given) in
  NumPy; returns the number checked. A bad one raises EpisodeError naming the dataset, the episode's
  index in its TFDS split, the step and the field."""
  checked = 0
  ds = source.raw_dataset(split, shuffle=False)
  for example in tfds.as_numpy(ds.take(limit) if limit is not None else ds):
    where = (f"dataset {source.name!r} (RLDS {source.path}): task {source.spec.name!r}, episode "
             f"{int(example['episode_id'])} of {source.split_map[split].split('[')[0]!r}")
    source.map_episode(example["steps"], where)
    checked += 1
  return checked


def import_rlds(path: str, name: str, data_dir: str, mapping: Any = None, splits: Optional[dict] = None,
                domain: str = "rlds", scan_episodes: int = 20, check_episodes: Optional[int] = None) -> str:
  """Links the RLDS dataset at `path` as control dataset `name` of `data_dir` (no copy); returns the
  link file. `mapping`: overrides of the inferred mapping (dict, JSON text or a JSON file path).
  Every episode of both splits (the first `check_episodes` of each when given) is read through the
  mapping and checked before the link is written; training checks each episode again as it streams."""
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
  counts = {}
  for split in ("train", "validation"):
    try:
      counts[split] = check_episodes_of(source, split, check_episodes)
    except tf.errors.OpError as e:  # an unreadable file or record: TF's first line names it
      raise ValueError(f"dataset {name!r} (RLDS {version_dir}), split {split}: {e.message.splitlines()[0]}") from None
  link["checked_episodes"] = counts
  return sources.write_link(data_dir, name, link)
