"""The on-disk contract of control datasets: the TFDS features every writer uses and every reader expects.

Features (RLDS-style, one step per action taken):
  steps: Dataset({observation: {<TaskSpec fields, nested dicts kept>}, action, reward float32,
                  is_first, is_last, is_terminal bool})
  episode_return float32, episode_id int64 (the env seed that reproduces the episode)
Text fields are tfds Text, images PNG-encoded Image (uint8 HxWx3), discrete int32, continuous float32.
data_pipelines' builders and importers write it; gato_jax.data reads it; tests write it too.
"""

from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

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
