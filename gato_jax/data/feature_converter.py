"""The seqio.FeatureConverter from task sequences (L + 1 tokens) to the model features of features.py.

Task features (per example): tokens, kinds, obs_positions [L + 1]; patches [n, 16, 16, 3] and
patch_rows, patch_cols [n, 2] for the n IMAGE tokens of the sequence, in order (compact: tasks
without images carry none through shuffle buffers and iterator checkpoints); task_index [].
Model features: the first L positions of tokens / kinds / obs_positions, patches and intervals
scattered back to their IMAGE positions (zeros elsewhere), targets / target_kinds (positions 1..L)
and loss_mask = 1 where the target is TEXT or ACTION. No packing: every sequence is already one
window (Gato does not pack).
"""

from typing import Mapping

import seqio
import tensorflow as tf

from gato_jax import features
from gato_jax.tokenizers.layout import TokenKind
from gato_jax.tokenizers.stream import IMAGE_FIELDS, STREAM_FIELDS

Spec = seqio.FeatureConverter.FeatureSpec


def task_feature_lengths(length: int) -> dict[str, int]:
  """seqio `sequence_length` for the Gato tasks: L + 1 tokens per stream field (task_index is a scalar)."""
  if length < 1:
    raise ValueError(f"sequence length must be >= 1, got {length}")
  return {**{k: length + 1 for k in STREAM_FIELDS}, "task_index": 0}


class GatoFeatureConverter(seqio.FeatureConverter):
  """Shifts a window of L + 1 tokens into L inputs and L next-token targets with the loss mask."""

  TASK_FEATURES = {
      **{k: Spec(dtype=tf.as_dtype(dtype), rank=1 + len(shape)) for k, (dtype, shape) in STREAM_FIELDS.items()},
      "task_index": Spec(dtype=tf.int32, rank=0),
  }
  MODEL_FEATURES = {
      name: Spec(dtype=tf.as_dtype(dtype), rank=len(features.feature_shapes(1)[name]))
      for name, dtype in features.FEATURE_DTYPES.items()
  }
  PACKING_FEATURE_DTYPES = None

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("GatoFeatureConverter does not pack: each sequence is one window of an episode "
                       "or document (with its prompt)")
    super().__init__(pack=False, **kwargs)

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = int(task_feature_lengths["tokens"]) - 1
    target_kinds = tf.constant([int(k) for k in TokenKind.target_kinds()], tf.int32)

    @tf.autograph.experimental.do_not_convert
    def convert(ex):
      stream = {k: _pad_to(ex[k], length + 1) for k in ("tokens", "kinds", "obs_positions")}
      images = tf.where(tf.equal(stream["kinds"], int(TokenKind.IMAGE)))
      tf.debugging.assert_equal(tf.shape(images)[0], tf.shape(ex["patches"])[0], message=(
          "GatoFeatureConverter: a sequence's patches must match its IMAGE tokens one to one"))
      for key in IMAGE_FIELDS:
        shape = list(STREAM_FIELDS[key][1])
        stream[key] = tf.scatter_nd(images, tf.ensure_shape(ex[key], [None] + shape), [length + 1] + shape)
      next_kinds = stream["kinds"][1:]
      is_target = tf.reduce_any(next_kinds[:, None] == target_kinds[None, :], axis=1)
      out = {k: v[:length] for k, v in stream.items()}
      out["targets"] = stream["tokens"][1:]
      out["target_kinds"] = next_kinds
      out["loss_mask"] = tf.cast(is_target, tf.float32)
      out["task_index"] = tf.cast(ex["task_index"], tf.int32)
      return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    length = int(task_feature_lengths["tokens"]) - 1
    return {name: (0 if name == "task_index" else length) for name in self.MODEL_FEATURES}


def _pad_to(value, length: int):
  """Pads (PAD = zeros) to exactly `length` along the first axis with a static shape."""
  pad = length - tf.shape(value)[0]
  value = tf.pad(value, [[0, pad]] + [[0, 0]] * (len(value.shape) - 1))
  return tf.ensure_shape(value, [length] + value.shape.as_list()[1:])
