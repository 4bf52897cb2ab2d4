"""The JAT dataset layout (jat-project/jat-dataset): Hugging Face `datasets`, one config per task, one row
per episode, converted into a TFDS dataset of the data_dir.

Control configs have per-step columns `image_observations`, `continuous_observations`,
`discrete_observations`, `text_observations` (observation fields, named without the suffix) and
`continuous_actions` or `discrete_actions`, `rewards`; each row's lists are one step per action (no
trailing observation). Text configs have `text`; caption configs `images` and `text`. The source is a
local folder (`SOURCE/CONFIG/{train,test}-*.parquet`, the Hub's layout, or any folder `datasets` reads)
or a Hub id (`jat-project/jat-dataset`, where network is available). `test` becomes `validation`.

The dataset carries no action space: discrete actions take max + 1 of the scanned rows' values and
continuous ones [-1, 1] when inside (JAT's MuJoCo and Meta-World), else the range seen; override with
`mapping={"action": {"num_values": [18]}}` (Atari's full action set), for instance. Atari frames are
4 stacked 84x84 grayscale frames: the newest becomes the image, padded to 96x96 by default.
"""

import os
from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.importers import writer
from gato_jax.data.schema import episode_features
from gato_jax.map_numpy import map_image, map_steps
from gato_jax.mapping import EpisodeMapping, FieldMap, Leaf, infer, load_overrides

ACTIONS = ("continuous_actions", "discrete_actions")
OBSERVATIONS = ("image_observations", "continuous_observations", "discrete_observations",
                "text_observations")
CAPTION_IMAGE = (64, 64)  # the built-in captions dataset's size; override with image_size


def load_split(source: str, config: str, split: str):
  import datasets  # pylint: disable=g-import-not-at-top
  local = os.path.join(os.path.expanduser(source), config)
  try:
    if os.path.isdir(local):
      return datasets.load_dataset(local, split=split)
    return datasets.load_dataset(source, config, split=split)
  except ValueError as e:  # an unknown split
    if "split" in str(e).lower():
      return None
    raise


def config_kind(columns) -> str:
  columns = set(columns)
  if columns & set(ACTIONS):
    return "control"
  if {"images", "text"} <= columns:
    return "captions"
  if "text" in columns:
    return "text"
  raise writer.ForeignDataError(f"JAT config with columns {sorted(columns)}: expected an action column "
                                f"{ACTIONS}, `text`, or `images` + `text`")


def _step_array(rows_column) -> np.ndarray:
  return np.stack([np.asarray(v) for v in rows_column]) if len(rows_column) else np.zeros((0,))


def _column_range(dataset, column: str, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-element min and max of a numeric list column (`size` values a step) over every row (Arrow
  flattens it; no row is decoded into Python)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  values = dataset.data.column(column)
  while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
    values = pc.list_flatten(values)
  flat = values.to_numpy().astype(np.float64)
  if flat.size % size:  # ragged rows: their per-element meaning is unclear, one range for all
    return (float(flat.min()),), (float(flat.max()),)
  flat = flat.reshape(-1, size)
  return tuple(flat.min(0).tolist()), tuple(flat.max(0).tolist())


def leaves(dataset, scan_rows: int = 20) -> list[Leaf]:
  """The per-step columns with dtype and shape (from the first rows) and value range (every row)."""
  out = []
  sample = dataset.select(range(min(scan_rows, len(dataset))))
  for column in dataset.column_names:
    values = [_step_array(row) for row in sample[column] if len(row)]
    if not values:
      raise writer.ForeignDataError(f"JAT column {column!r}: the first {len(sample)} rows are empty")
    if column == "text_observations" or values[0].dtype.kind in "US":
      out.append(Leaf(column, "string"))
      continue
    stacked = np.concatenate(values)
    dtype = "uint8" if column == "image_observations" else (
        "int64" if stacked.dtype.kind in "iu" else "float32")
    low, high = ((float(stacked.min()), float(stacked.max())) if column == "image_observations"
                 else _column_range(dataset, column, int(np.prod(stacked.shape[1:], dtype=np.int64))))
    out.append(Leaf(column, dtype, stacked.shape[1:], low=low, high=high))
  return out


def infer_mapping(dataset, overrides=None, scan_rows: int = 20) -> EpisodeMapping:
  columns = dataset.column_names
  action = [c for c in ACTIONS if c in columns]
  if len(action) != 1:
    raise writer.ForeignDataError(f"JAT control config: expected one of {ACTIONS}, columns are {columns}")
  mapping = infer(leaves(dataset, scan_rows), action, reward="rewards")
  renamed = {k.removesuffix("_observations") if k in OBSERVATIONS else k: v
             for k, v in mapping.observation.items()}
  return EpisodeMapping(renamed, mapping.action, mapping.reward, mapping.dropped,
                        mapping.last_step).with_overrides(overrides)


def inspect(source: str, config: str, overrides=None, name: str = "") -> str:
  train = load_split(source, config, "train")
  kind = config_kind(train.column_names)
  head = f"JAT {source} config {config}: {kind}, {len(train)} train rows"
  if kind != "control":
    return head + ("" if kind == "text" else f"\n  image <- images (resized to {CAPTION_IMAGE})") + \
        "\n  text <- text"
  return head + "\n" + infer_mapping(train, overrides).describe(name or "jat_" + config.replace("-", "_"))


def _control_examples(dataset, mapping, spec, name, split):
  for i, row in enumerate(dataset):
    where = f"{split} row {i}"
    try:
      length = len(row[mapping.reward or mapping.action.sources[0]])
      steps = map_steps(mapping, lambda column: row[column] if column == "text_observations"
                        else _step_array(row[column]), length)
    except (ValueError, KeyError, TypeError) as e:
      raise writer.ForeignDataError(f"dataset {name!r}, episode {where}: cannot map it: {e}") from None
    steps.update(writer.episode_flags(length, terminal=True))
    yield writer.control_example(name, where, steps, spec, i)


def import_jat(source: str, config: str, name: str, data_dir: str, mapping: Any = None,
               image_size: Optional[tuple[int, int]] = None, domain: str = "jat",
               expert_return: Optional[float] = None, random_return: Optional[float] = None):
  """Converts JAT config `config` of `source` into TFDS dataset `name`; returns the builder.

  Control datasets record `expert_return` / `random_return` when given (JAT publishes them per task),
  else the imported episodes' mean return as expert and NaN as random (no simulator to measure it)."""
  train = load_split(source, config, "train")
  if train is None:
    raise writer.ForeignDataError(f"JAT {source} config {config}: no train split")
  validation = load_split(source, config, "test")
  if validation is None or not len(validation):
    held = max(1, len(train) // 10)
    train, validation = train.select(range(len(train) - held)), train.select(range(len(train) - held, len(train)))
  kind = config_kind(train.column_names)
  meta = {"kind": kind, "domain": domain, "source": f"jat:{source}:{config}"}
  if kind == "text":
    return writer.write_dataset(
        name, data_dir, tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        {s: (lambda d=d: ({"text": r["text"]} for r in d)) for s, d in (("train", train), ("validation", validation))},
        lambda: meta, f"Text documents of JAT config {config}.")
  if kind == "captions":
    field = FieldMap("images", "image", tuple(image_size or CAPTION_IMAGE) + (3,))

    def pairs(d):
      for r in d:
        image = np.asarray(r["images"].convert("RGB"))[None]
        yield {"image": map_image(image, field)[0], "caption": r["text"]}
    return writer.write_dataset(
        name, data_dir, tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=field.shape, dtype=np.uint8, encoding_format="png"),
            "caption": tfds.features.Text()}),
        {"train": lambda: pairs(train), "validation": lambda: pairs(validation)},
        lambda: meta, f"Image-caption pairs of JAT config {config}.")
  overrides = dict(writer_overrides(mapping, image_size))
  episode_mapping = infer_mapping(train, overrides)
  spec = episode_mapping.task_spec(name)
  returns = []

  def counted(d, split):
    for example in _control_examples(d, episode_mapping, spec, name, split):
      if split == "train":
        returns.append(float(example["episode_return"]))
      yield example

  def metadata():
    stats = writer.returns_metadata(returns)
    return {**meta, "task_spec": spec.to_dict(), "mapping": episode_mapping.to_dict(), **stats,
            "expert_return": stats["dataset_return_mean"] if expert_return is None else float(expert_return),
            "random_return": float("nan") if random_return is None else float(random_return),
            "score_reference": "given" if expert_return is not None else "expert: mean return of the "
                               "imported train episodes; random: unknown"}
  return writer.write_dataset(
      name, data_dir, episode_features(spec),
      {"train": lambda: counted(train, "train"), "validation": lambda: counted(validation, "test")},
      metadata, f"Episodes of JAT config {config} ({source}).")


def writer_overrides(mapping: Any, image_size: Optional[tuple[int, int]]) -> dict:
  overrides = load_overrides(mapping)
  if image_size and "image_size" not in overrides:
    overrides["image_size"] = list(image_size)
  return overrides
