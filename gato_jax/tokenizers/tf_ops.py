"""Whole episodes and documents as token streams inside the SeqIO graph (TensorFlow).

The value transforms and the stream builders are the ones acting uses (values.py, timestep.py,
stream.py), run with TensorFlow's NumPy API; only the assembly is TensorFlow's own: every field of a
whole episode is tokenized at once, each field's flat stream is cut into per-step rows (a ragged
[T, None] tensor), the rows are concatenated in the TaskSpec's (lexicographic) order with the
separator and the action, and flattened into one stream. `patches` is only materialised for tasks with
an image field (it costs 768 bytes a token); for the others the feature converter fills zeros after
windowing.
"""

import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from gato_jax.episodes import TaskSpec, get_path
from gato_jax.tokenizers import stream, values
from gato_jax.tokenizers.layout import TokenKind, VocabLayout
from gato_jax.tokenizers.timestep import MAX_OBS_POSITIONS, action_ids, field_ids

P = values.PATCH_SIZE


def _assert_in_vocabulary(value, discrete: bool, layout: VocabLayout, what: str):
  """The graph's guard before a transform (episodes arrive checked against their TaskSpec by
  readers.check_episode; this also holds the vocabulary's own bound)."""
  if discrete:
    value = tf.cast(value, tf.int64)
    return [tf.debugging.assert_greater_equal(value, tf.constant(0, tf.int64), f"{what}: negative value"),
            tf.debugging.assert_less(value, tf.constant(layout.num_discrete_values, tf.int64),
                                     f"{what}: value >= num_discrete_values")]
  return [tf.debugging.assert_all_finite(tf.cast(value, tf.float64), f"{what}: non-finite value")]


def _rows(s, row_lengths):
  """A flat stream cut into per-step rows: every field a ragged [T, None, ...] tensor."""
  row_lengths = tf.cast(row_lengths, tf.int64)
  return {k: tf.RaggedTensor.from_row_lengths(v, row_lengths, validate=False) for k, v in s.items()}


def _concat_rows(parts):
  return {k: tf.concat([p[k] for p in parts], axis=1) for k in parts[0]}


def _field_rows(value, field, spec: TaskSpec, path: str, layout: VocabLayout, text_tokenizer,
                num_steps, has_images: bool, num_patch_positions: int):
  """One observation field of every step -> its per-step rows (local positions 0)."""
  if field.modality == "text":
    if text_tokenizer is None:
      raise ValueError(f"task {spec.name!r}: observation/{path} is text: a TextTokenizer is needed")
    ids = text_tokenizer.vocab.encode_tf(value)
    s = stream.of_ids(ids.flat_values, TokenKind.OBS_TEXT, tnp, has_images)
    return _rows(s, ids.row_lengths())
  if field.modality == "image":
    rows, cols = values.patch_intervals(field.shape[0], field.shape[1], num_patch_positions)
    patches = values.image_to_patches(tf.cast(value, tf.uint8), tnp)
    s = stream.of_patches(tf.reshape(patches, [-1, P, P, 3]), tf.tile(rows, [num_steps, 1]),
                          tf.tile(cols, [num_steps, 1]), tnp)
    return _rows(s, tf.fill([num_steps], len(rows)))
  flat = tf.reshape(value, [num_steps, -1])
  discrete = field.modality == "discrete"
  with tf.control_dependencies(_assert_in_vocabulary(flat, discrete, layout, f"observation/{path}")):
    ids = field_ids(flat, field, layout, tnp)
  kind = TokenKind.OBS_DISCRETE if discrete else TokenKind.OBS_CONTINUOUS
  return _rows(stream.of_ids(ids, kind, tnp, has_images), tf.fill([num_steps], int(np.prod(field.shape))))


def tokenize_episode(steps, spec: TaskSpec, layout: VocabLayout, text_tokenizer=None,
                     max_obs_positions: int = MAX_OBS_POSITIONS,
                     num_patch_positions: int = values.NUM_PATCH_POSITIONS):
  """Dense per-step tensors (leading axis T) -> one flat token stream of the whole episode.

  Returns tokens, kinds, obs_positions, timesteps (the step of each token) and, for tasks with an
  image field, patches, patch_rows and patch_cols.
  """
  action = steps["action"]
  num_steps = tf.shape(action)[0]
  has_images = any(f.modality == "image" for _, f in spec.observation_fields())
  fields = [_field_rows(get_path(steps["observation"], path), field, spec, path, layout, text_tokenizer,
                        num_steps, has_images, num_patch_positions)
            for path, field in spec.observation_fields()]
  parts = []
  if fields:
    # Positions count across the step's fields, so they are numbered after the join, not per field.
    obs = _concat_rows([{k: v for k, v in f.items() if k != "obs_positions"} for f in fields])
    positions = tf.cast(tf.ragged.range(obs["tokens"].row_lengths()), tf.int32)
    parts.append({**obs, "obs_positions": tf.minimum(positions, max_obs_positions - 1)})
  separator = stream.of_ids(tf.fill([num_steps], layout.separator_id), TokenKind.SEPARATOR, tnp, has_images)
  parts.append(_rows(separator, tf.ones([num_steps], tf.int32)))
  a = spec.action
  flat = tf.reshape(action, [num_steps, a.size])
  checks = [] if a.kind == "continuous" else [tf.debugging.assert_less(
      tf.cast(flat, tf.int64), tf.constant(a.num_values, tf.int64),
      f"task {spec.name!r}: action outside the action space {a.num_values}")]
  with tf.control_dependencies(checks + _assert_in_vocabulary(flat, a.kind != "continuous", layout, "action")):
    ids = action_ids(flat, a, layout, tnp)
  parts.append(_rows(stream.of_ids(ids, TokenKind.ACTION, tnp, has_images), tf.fill([num_steps], a.size)))
  rows = _concat_rows(parts)
  out = {k: v.flat_values for k, v in rows.items()}
  out["timesteps"] = tf.cast(rows["tokens"].value_rowids(), tf.int32)
  return out


def tokenize_text(text, text_tokenizer, kind: TokenKind = TokenKind.TEXT, append_eos: bool = True):
  """A string -> a stream of text tokens without image fields (document text is a training target;
  EOS closes it)."""
  ids = tf.cast(text_tokenizer.vocab.encode_tf(text), tf.int32)
  if append_eos:
    ids = tf.concat([ids, [text_tokenizer.vocab.eos_id]], 0)
  return stream.of_ids(ids, kind, tnp, image_fields=False)
