"""The generic TFDS builder of control datasets: one class per ControlTask, made by `make_control_builder`.

Features (RLDS-style, one step per action taken):
  steps: Dataset({observation: {<TaskSpec fields, nested dicts kept>}, action, reward float32,
                  is_first, is_last, is_terminal bool})
  episode_return float32, episode_id int64 (the env seed that reproduces the episode)
Text fields are tfds Text, images PNG-encoded Image (uint8 HxWx3), discrete int32, continuous float32.
Metadata: task_spec (TaskSpec.to_dict()), expert_return / random_return (means over >= return_episodes
episodes), their standard deviations and counts, episodes_kept / episodes_rejected, per-split stats.
"""

from typing import Any, ClassVar, Mapping

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import control
from data_pipelines.local_builder import LocalBuilder
from gato_jax.episodes import FieldSpec, TaskSpec


def field_feature(field: FieldSpec):
  if field.modality == "text":
    return tfds.features.Text()
  if field.modality == "image":
    return tfds.features.Image(shape=field.shape, dtype=np.uint8, encoding_format="png")
  dtype = np.int32 if field.modality == "discrete" else np.float32
  return tfds.features.Tensor(shape=field.shape, dtype=dtype)


def _observation_features(tree: Mapping[str, Any]) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      key: _observation_features(value) if isinstance(value, Mapping) else field_feature(value)
      for key, value in tree.items()})


def episode_features(spec: TaskSpec) -> tfds.features.FeaturesDict:
  """The TFDS features of a control dataset with this spec (the on-disk contract)."""
  a = spec.action
  action_dtype = np.float32 if a.kind == "continuous" else np.int32
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset({
          "observation": _observation_features(spec.observation),
          "action": tfds.features.Tensor(shape=a.shape, dtype=action_dtype),
          "reward": tfds.features.Scalar(dtype=np.float32),
          "is_first": tfds.features.Scalar(dtype=np.bool_),
          "is_last": tfds.features.Scalar(dtype=np.bool_),
          "is_terminal": tfds.features.Scalar(dtype=np.bool_),
      }),
      "episode_return": tfds.features.Scalar(dtype=np.float32),
      "episode_id": tfds.features.Scalar(dtype=np.int64),
  })


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

  task: ClassVar[control.ControlTask]

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
