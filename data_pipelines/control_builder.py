"""The generic TFDS builder of control datasets: one class per ControlTask, made by `make_control_builder`.

Features: gato_jax/data/schema.py (the on-disk contract shared with the readers).
Metadata: kind "control", domain, task_spec (TaskSpec.to_dict()), expert_return / random_return (means over >= return_episodes
episodes), their standard deviations and counts, episodes_kept / episodes_rejected, per-split stats.
"""

from typing import Any, ClassVar, Mapping

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.local_builder import LocalBuilder
from gato_jax.data.schema import episode_features
from gato_jax.envs import control
from gato_jax.envs import registry as envs_registry


def _cast_observation(tree: Mapping[str, Any], spec_tree: Mapping[str, Any]) -> dict:
  out = {}
  for key, field in spec_tree.items():
    value = tree[key]
    if isinstance(field, Mapping):
      out[key] = _cast_observation(value, field)
    elif field.modality == "discrete":
      out[key] = np.asarray(value, np.int32)
    elif field.modality == "continuous":
      out[key] = np.asarray(value, np.float32)
    else:
      out[key] = value
  return out


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


class ControlEpisodeBuilder(LocalBuilder, skip_registration=True):
  """Episodes of `task`'s scripted expert; `return_episodes` sets how many episodes the returns average."""

  KIND = "control"
  task: ClassVar[control.ControlTask]

  def domain(self) -> str:
    return envs_registry.domain_of(self.task)

  def _info(self) -> tfds.core.DatasetInfo:
    return self._build_info(episode_features(self.task.spec),
                            self.task.description or f"Scripted-expert episodes of {self.task.name}.")

  def _split_generators(self, dl_manager):
    del dl_manager
    self._stats = {"train": control.SplitStats(), "validation": control.SplitStats()}
    return {"train": self._generate_examples("train", self.num_train),
            "validation": self._generate_examples("validation", self.num_validation)}

  def _generate_examples(self, split: str, num_episodes: int):
    env = self.task.make_env(control.episode_seed(self.seed, split, 0))
    try:
      for index, (seed, episode) in enumerate(control.generate_episodes(
          self.task, num_episodes, self.seed, split, self._stats[split], env=env)):
        steps = dict(episode["steps"])
        steps["observation"] = _cast_observation(steps["observation"], self.task.spec.observation)
        yield index, {"steps": steps, "episode_return": np.float32(episode["episode_return"]),
                      "episode_id": np.int64(seed)}
    finally:
      if hasattr(env, "close"):
        env.close()

  def _finalize(self) -> None:
    stats = self._stats
    self.build_metadata.update({
        "task_spec": self.task.spec.to_dict(),
        "episodes_kept": sum(s.kept for s in stats.values()),
        "episodes_rejected": sum(s.rejected for s in stats.values()),
        "splits": {name: {"episodes": s.kept, "rejected": s.rejected, "steps": s.steps,
                          "mean_return": _mean_std(s.returns)[0]} for name, s in stats.items()},
        "max_steps": self.task.max_steps,
        "seeds": {purpose: f"{self.seed} * {control.SEED_STRIDE} + {offset} + i"
                  for purpose, offset in control.SEED_OFFSETS.items()},
    })
    self.build_metadata.update(self._measure_returns())

  def _measure_returns(self) -> dict:
    """Expert return over the data's episodes (topped up to `return_episodes`) and random return over
    `return_episodes` episodes, on the `returns` seeds (the same initial states for both policies)."""
    task, n = self.task, self.return_episodes
    expert = [r for s in self._stats.values() for r in s.returns]
    env = task.make_env(control.episode_seed(self.seed, "returns", 0))
    try:
      topup = control.SplitStats()
      if len(expert) < n:
        for _ in control.generate_episodes(task, n - len(expert), self.seed, "returns", topup, env=env):
          pass
      random_stats = control.SplitStats()
      for _ in control.generate_episodes(task, n, self.seed, "returns", random_stats, env=env,
                                         policy="random"):
        pass
    finally:
      if hasattr(env, "close"):
        env.close()
    expert += topup.returns
    expert_mean, expert_std = _mean_std(expert)
    random_mean, random_std = _mean_std(random_stats.returns)
    return {
        "expert_return": expert_mean, "expert_return_std": expert_std, "expert_episodes": len(expert),
        "random_return": random_mean, "random_return_std": random_std,
        "random_episodes": len(random_stats.returns),
        "random_mean_length": random_stats.steps / max(1, len(random_stats.returns)),
    }


def make_control_builder(task: control.ControlTask, version: str = "1.0.0",
                         register_with_tfds: bool = True) -> type:
  """A GeneratorBasedBuilder subclass named `task.name` (registered with TFDS unless told not to)."""
  class_name = "".join(part.capitalize() for part in task.name.split("_")) + "Builder"
  attrs = {"name": task.name, "task": task, "VERSION": tfds.core.Version(version),
           "__module__": __name__}
  return type(class_name, (ControlEpisodeBuilder,), attrs,
              skip_registration=not register_with_tfds)
