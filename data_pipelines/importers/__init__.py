"""Importers of datasets people already have: RLDS / Open X-Embodiment (linked in place), the JAT layout
and Minari (converted into TFDS datasets of the data_dir). What `gato-data inspect` / `gato-data import`
call:

  inspect(SOURCE)                                    the mapping that would be used, as a table
                                                     (`gato-data inspect --source=SOURCE`)
  import_dataset("rlds", PATH, NAME, DATA_DIR)       gs:// or local TFDS dataset folder, no copy
  import_dataset("jat", ROOT, NAME, DATA_DIR, jat_config="atari-pong")
  import_dataset("minari", "D4RL/door/human-v2", NAME, DATA_DIR)

`mapping` (a dict, JSON text or a JSON file) overrides any part of the inferred mapping (see
gato_jax.mapping.EpisodeMapping.with_overrides). Each format's module imports its library only
when used (`pip install -e .[import]` for JAT and Minari).
"""

import os
from typing import Any, Optional

from gato_jax.mapping import load_overrides

FORMATS = ("rlds", "jat", "minari")


def detect_format(source: str) -> str:
  """rlds: a TFDS dataset folder (dataset_info.json in it or below); jat: a folder of config folders
  (or a Hub id given with a config); minari: anything else (a Minari dataset id)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if source.startswith("gs://") or tf.io.gfile.glob(os.path.join(source, "dataset_info.json")) or \
      tf.io.gfile.glob(os.path.join(source, "*", "dataset_info.json")) or \
      tf.io.gfile.glob(os.path.join(source, "*", "*", "dataset_info.json")):
    return "rlds"
  if os.path.isdir(os.path.expanduser(source)):
    return "jat"
  return "minari"


def jat_configs(source: str) -> list[str]:
  root = os.path.expanduser(source)
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) if os.path.isdir(root) else []


def inspect(source: str, *, format: Optional[str] = None, jat_config: str = "", mapping: Any = None,  # pylint: disable=redefined-builtin
            minari_root: Optional[str] = None, name: str = "") -> str:
  """The inferred (and overridden) mapping of `source`: what will be tokenized, from where."""
  format = format or detect_format(source)
  if format == "rlds":
    from data_pipelines.importers import rlds  # pylint: disable=g-import-not-at-top
    return rlds.inspect(source, mapping, name)
  if format == "jat":
    from data_pipelines.importers import jat  # pylint: disable=g-import-not-at-top
    configs = [jat_config] if jat_config else jat_configs(source)
    if not configs:
      raise ValueError(f"{source}: no JAT config folders; give --jat_config for a Hub id")
    return "\n".join(jat.inspect(source, c, mapping, name) for c in configs)
  if format == "minari":
    from data_pipelines.importers import minari  # pylint: disable=g-import-not-at-top
    return minari.inspect(source, mapping, name, minari_root)
  raise ValueError(f"unknown import format {format!r}; expected one of {FORMATS}")


def foreign_link_counts(data_dir: str, name: str) -> str:
  """"N train + M validation": the episodes the RLDS import validated (recorded in the link)."""
  from gato_jax.data import sources  # pylint: disable=g-import-not-at-top  # TensorFlow: only when listing links
  counts = (sources.load_link(data_dir, name) or {}).get("checked_episodes", {})
  return " + ".join(f"{n} {split}" for split, n in counts.items())


def import_dataset(format: str, source: str, name: str, data_dir: str, *, jat_config: str = "",  # pylint: disable=redefined-builtin
                   mapping: Any = None, image_size: Optional[tuple[int, int]] = None,
                   minari_root: Optional[str] = None) -> str:
  """Imports `source` as dataset `name` of `data_dir`; returns a one-line summary."""
  if format == "rlds":
    from data_pipelines.importers import rlds  # pylint: disable=g-import-not-at-top
    overrides = {"image_size": list(image_size)} if image_size else {}
    path = rlds.import_rlds(source, name, data_dir, {**overrides, **load_overrides(mapping)})
    checked = foreign_link_counts(data_dir, name)
    return f"{name}: linked in place ({source}), {checked} episodes checked -> {path}"
  if format == "jat":
    from data_pipelines.importers import jat  # pylint: disable=g-import-not-at-top
    if not jat_config:
      raise ValueError(f"import --format=jat needs --jat_config (one of {jat_configs(source) or 'the Hub configs'})")
    builder = jat.import_jat(source, jat_config, name, data_dir, mapping, image_size)
  elif format == "minari":
    from data_pipelines.importers import minari  # pylint: disable=g-import-not-at-top
    builder = minari.import_minari(source, name, data_dir, mapping, minari_root)
  else:
    raise ValueError(f"unknown import format {format!r}; expected one of {FORMATS}")
  splits, meta = builder.info.splits, builder.info.metadata
  scores = (f"; scores normalised by expert {meta['expert_return']:.4g}, random {meta['random_return']:.4g} "
            f"({meta['score_reference']})" if meta.get("score_reference") else "")
  return (f"{name}: {meta.get('kind')} dataset, {splits['train'].num_examples} train + "
          f"{splits['validation'].num_examples} validation examples -> {builder.data_dir}{scores}")
