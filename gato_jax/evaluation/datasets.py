"""What evaluation reads from a built control dataset: its task, returns, seeds and demonstrations.

Expert and random returns, the TaskSpec, domain and build seed come from the dataset's TFDS metadata
in the data_dir (written by `gato-data build` or an importer); the simulator and observation format
from the ControlTask gato_jax.envs has for it. Prompts are successful demonstrations from the
validation split, which no training batch ever reads.
"""

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from gato_jax.data import sources
from gato_jax.envs import registry
from gato_jax.episodes import TaskSpec, episode_return


class EvaluationError(ValueError):
  """A bad evaluation request (unknown task, dataset not built, config / checkpoint mismatch)."""


@dataclasses.dataclass
class ControlDataset:
  """A built control dataset and its ControlTask, as evaluation uses them."""
  name: str
  task: Any  # gato_jax.envs.control.ControlTask
  spec: TaskSpec
  domain: str
  expert_return: float
  random_return: float
  build_seed: int
  builder: Any
  metadata: dict

  def validation_episodes(self, max_episodes: int = 0) -> list[dict]:
    """Validation episodes as NumPy (observation text as str), in file order."""
    ds = self.builder.as_dataset(split="validation", shuffle_files=False)
    if max_episodes:
      ds = ds.take(max_episodes)
    # An episode's steps read in pieces of the task's step limit: TensorFlow allocates a batch whole,
    # and one batch of 1 << 20 steps of 96x96x3 Atari frames asked for 28 GB (ResourceExhaustedError).
    piece = int(getattr(self.task, "max_steps", 0) or 1000) + 8
    episodes = []
    for example in ds:
      batch = read_steps(example["steps"], piece)
      batch["observation"] = _decode_text(batch["observation"], self.spec.observation)
      episodes.append({"steps": batch, "episode_id": int(example["episode_id"]),
                       "episode_return": float(example["episode_return"])})
    if not episodes:
      raise EvaluationError(f"dataset {self.name!r}: the validation split is empty; rebuild it")
    return episodes


def read_steps(steps, piece: int) -> dict:
  """A tf.data dataset of an episode's steps as one NumPy dict, read `piece` steps at a time."""
  pieces = list(tfds.as_numpy(steps.batch(piece)))
  return pieces[0] if len(pieces) == 1 else _concat(pieces)


def _concat(pieces):
  if isinstance(pieces[0], dict):
    return {k: _concat([p[k] for p in pieces]) for k in pieces[0]}
  return np.concatenate(pieces, axis=0)


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
  version_dir = sources.dataset_version_dir(name, data_dir)
  if version_dir is None:
    raise EvaluationError(f"task {name!r}: no dataset under {sources.expand_data_dir(data_dir)}/{name}; "
                          f"build it with `gato-data build --dataset={name} --data_dir={data_dir}` "
                          "(evaluation reads its expert / random returns and validation demonstrations)")
  metadata = sources.read_metadata(name, data_dir, version_dir)
  missing = [k for k in ("expert_return", "random_return", "task_spec") if k not in metadata]
  if missing:
    raise EvaluationError(f"task {name!r}: the dataset's metadata under {version_dir} lacks {missing}; "
                          "rebuild it with gato-data")
  try:
    task = registry.task_for_dataset(name, metadata)
  except KeyError as e:
    raise EvaluationError(f"task {name!r}: {e.args[0]}") from None
  spec = TaskSpec.from_dict(metadata["task_spec"])
  if spec != task.spec:
    raise EvaluationError(f"task {name!r}: the dataset under {version_dir} was built with a different "
                          f"TaskSpec than the registered task: {spec} vs {task.spec}; rebuild it")
  domain = str(metadata.get("domain") or registry.domain_of(task))
  return ControlDataset(name, task, spec, domain, float(metadata["expert_return"]),
                        float(metadata["random_return"]), int(metadata.get("build_seed", 0)),
                        tfds.builder_from_directory(version_dir), metadata)


def successful_episodes(episodes: Sequence[dict]) -> list[dict]:
  """The episodes whose return is at least the median of theirs: the prompts' demonstrations.

  Validation episodes passed the dataset's own filter already (Meta-World: success; BabyAI: reached
  the goal; CartPole: >= 475), so this mostly drops the weaker half of unfiltered tasks (Pendulum,
  MountainCar).
  """
  returns = np.array([episode_return(e) for e in episodes])
  return [e for e, r in zip(episodes, returns) if r >= np.median(returns)]
