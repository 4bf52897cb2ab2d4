"""What evaluation reads from a built control dataset: its task, returns, seeds and demonstrations.

Expert and random returns, the TaskSpec and the build seed come from the dataset's TFDS metadata
(written by `gato-data build`); the simulator and observation format from the registered
`ControlTask`. Prompts are successful demonstrations from the validation split, which no training
batch ever reads.
"""

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from gato_jax.episodes import TaskSpec, episode_return


class EvaluationError(ValueError):
  """A bad evaluation request (unknown task, dataset not built, config / checkpoint mismatch)."""


def domain_of(entry) -> str:
  """The source folder of a dataset (babyai, metaworld, classic_control, ...); 'custom' otherwise."""
  if getattr(entry, "domain", None):
    return entry.domain
  fn = entry.task.make_env if entry.task is not None else None
  fn = getattr(fn, "func", fn)
  module = getattr(fn, "__module__", "") or ""
  parts = module.split(".")
  if len(parts) >= 2 and parts[0] == "data_pipelines":
    return parts[1]
  return "custom"


def control_task_names() -> list[str]:
  from data_pipelines import registry  # pylint: disable=g-import-not-at-top
  return sorted(n for n, e in registry.DATASETS.items() if e.kind == "control")


def registry_entry(name: str, kind: Optional[str] = None):
  """The data_pipelines registry entry of `name`; refuses unknown names and wrong kinds."""
  from data_pipelines import registry  # pylint: disable=g-import-not-at-top
  entry = registry.DATASETS.get(name)
  if entry is None or (kind is not None and entry.kind != kind):
    known = sorted(n for n, e in registry.DATASETS.items() if kind is None or e.kind == kind)
    raise EvaluationError(f"unknown {kind or ''} task {name!r}: registered {kind or ''} datasets are "
                          f"{', '.join(known)} (data_pipelines.registry.DATASETS)")
  return entry


def _read_metadata(builder) -> dict:
  metadata = dict(builder.info.metadata or {})
  if not metadata:  # older tfds versions leave MetadataDict empty until asked to load it
    path = os.path.join(builder.data_dir, "metadata.json")
    if os.path.exists(path):
      with open(path) as f:
        metadata = json.load(f)
  return metadata


@dataclasses.dataclass
class ControlDataset:
  """A built control dataset and its ControlTask, as evaluation uses them."""
  name: str
  task: Any  # data_pipelines.control.ControlTask
  spec: TaskSpec
  domain: str
  expert_return: float
  random_return: float
  build_seed: int
  builder: Any
  metadata: dict

  def validation_episodes(self, max_episodes: int = 0) -> list[dict]:
    """Validation episodes as NumPy (observation text as str), in file order."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    ds = self.builder.as_dataset(split="validation", shuffle_files=False)
    if max_episodes:
      ds = ds.take(max_episodes)
    episodes = []
    for example in ds:
      steps = example["steps"]
      batch = next(iter(tfds.as_numpy(steps.batch(1 << 20))))
      batch["observation"] = _decode_text(batch["observation"], self.spec.observation)
      episodes.append({"steps": batch, "episode_id": int(example["episode_id"]),
                       "episode_return": float(example["episode_return"])})
    if not episodes:
      raise EvaluationError(f"dataset {self.name!r}: the validation split is empty; rebuild it")
    return episodes


def _decode_text(tree, spec_tree):
  out = {}
  for key, value in tree.items():
    field = spec_tree[key]
    if isinstance(field, dict):
      out[key] = _decode_text(value, field)
    elif field.modality == "text":
      out[key] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]
    else:
      out[key] = value
  return out


def load_control_dataset(name: str, data_dir: str) -> ControlDataset:
  """The built dataset `name` under `data_dir`, with a message saying how to build it if it is not."""
  entry = registry_entry(name, "control")
  data_dir = os.path.expanduser(data_dir)
  builder = entry.builder(data_dir=data_dir)
  if not builder.is_prepared():
    raise EvaluationError(f"task {name!r}: no dataset under {os.path.join(data_dir, name)}; build it "
                          f"with `gato-data build --dataset={name} --data_dir={data_dir}` (evaluation reads "
                          "its expert / random returns and validation demonstrations)")
  metadata = _read_metadata(builder)
  missing = [k for k in ("expert_return", "random_return") if k not in metadata]
  if missing:
    raise EvaluationError(f"task {name!r}: the dataset's metadata under {builder.data_dir} lacks "
                          f"{missing}; rebuild it with gato-data")
  spec = TaskSpec.from_dict(metadata["task_spec"]) if "task_spec" in metadata else entry.task.spec
  if spec != entry.task.spec:
    raise EvaluationError(f"task {name!r}: the dataset under {builder.data_dir} was built with a different "
                          f"TaskSpec than the registered task: {spec} vs {entry.task.spec}; rebuild it")
  return ControlDataset(name, entry.task, spec, domain_of(entry), float(metadata["expert_return"]),
                        float(metadata["random_return"]), int(metadata.get("build_seed", 0)), builder,
                        metadata)


def successful_episodes(episodes: Sequence[dict]) -> list[dict]:
  """The episodes whose return is at least the median of theirs: the prompts' demonstrations.

  Validation episodes passed the dataset's own filter already (Meta-World: success; BabyAI: reached
  the goal; CartPole: >= 475), so this mostly drops the weaker half of unfiltered tasks (Pendulum,
  MountainCar).
  """
  returns = np.array([episode_return(e) for e in episodes])
  return [e for e, r in zip(episodes, returns) if r >= np.median(returns)]
