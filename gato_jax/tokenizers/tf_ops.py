"""TensorFlow versions of the tokenizers, for the SeqIO pipeline; token for token equal to the NumPy ones.

Whole episodes are tokenized at once: every per-step field becomes a ragged [T, None] tensor, the
fields are concatenated in the TaskSpec's (lexicographic) order with the separator and the action, and
the rows are flattened into one stream. `patches` is only materialised for tasks with an image field
(it costs 768 bytes a token); for the others the feature converter fills zeros after windowing.
"""

import numpy as np
import tensorflow as tf

from gato_jax.episodes import TaskSpec, get_path
from gato_jax.tokenizers import values
from gato_jax.tokenizers.layout import TokenKind, VocabLayout
from gato_jax.tokenizers.timestep import MAX_OBS_POSITIONS

P = values.PATCH_SIZE


def mu_law_encode(x, mu: float = values.MU, m: float = values.M):
  x = tf.cast(x, tf.float64)
  return tf.sign(x) * tf.math.log1p(mu * tf.abs(x)) / np.log1p(m * mu)


def tokenize_continuous(x, layout: VocabLayout, mu_law: bool = True):
  """Floats of any shape -> int32 ids of the same shape (flatten the trailing axes yourself)."""
  x = tf.cast(x, tf.float64)
  tf.debugging.assert_all_finite(x, "tokenize_continuous: non-finite value")
  y = tf.clip_by_value(mu_law_encode(x) if mu_law else x, -1.0, 1.0)
  bins = layout.num_continuous_bins
  b = tf.clip_by_value(tf.floor((y + 1.0) / 2.0 * bins), 0, bins - 1)
  return tf.cast(b, tf.int32) + layout.continuous_offset


def tokenize_discrete(x, layout: VocabLayout):
  x = tf.cast(x, tf.int32)
  tf.debugging.assert_greater_equal(x, 0, "tokenize_discrete: negative value")
  tf.debugging.assert_less(x, layout.num_discrete_values, "tokenize_discrete: value >= num_discrete_values")
  return x + layout.discrete_offset


def image_to_patches(images):
  """[..., H, W, 3] uint8 -> [..., H/16 * W/16, 16, 16, 3] in raster order."""
  shape = tf.shape(images)
  lead = shape[:-3]
  h, w = images.shape[-3] // P, images.shape[-2] // P
  x = tf.reshape(images, tf.concat([lead, [h, P, w, P, 3]], 0))
  rank = len(images.shape) - 3
  perm = list(range(rank)) + [rank, rank + 2, rank + 1, rank + 3, rank + 4]
  x = tf.transpose(x, perm)
  return tf.reshape(x, tf.concat([lead, [h * w, P, P, 3]], 0))


def _per_step(ids_2d, kind, num_steps, patches=None, rows=None, cols=None):
  """Wraps a dense [T, n] or ragged [T, None] id tensor as a ragged per-step stream."""
  ids = ids_2d if isinstance(ids_2d, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(ids_2d)
  field = {"tokens": ids, "kinds": tf.ones_like(ids) * int(kind)}
  if patches is not None:
    field["patches"] = tf.RaggedTensor.from_tensor(patches)
    field["patch_rows"] = tf.RaggedTensor.from_tensor(rows)
    field["patch_cols"] = tf.RaggedTensor.from_tensor(cols)
  return field


def _fill_image_fields(field, has_images):
  """Non-image fields get zero patches / intervals when the task has images somewhere."""
  if not has_images or "patches" in field:
    return field
  ids = field["tokens"]
  n = tf.shape(ids.flat_values)[0]
  field["patches"] = ids.with_flat_values(tf.zeros([n, P, P, 3], tf.uint8))
  field["patch_rows"] = ids.with_flat_values(tf.zeros([n, 2], tf.int32))
  field["patch_cols"] = ids.with_flat_values(tf.zeros([n, 2], tf.int32))
  return field


def tokenize_episode(steps, spec: TaskSpec, layout: VocabLayout, text_tokenizer=None,
                     max_obs_positions: int = MAX_OBS_POSITIONS,
                     num_patch_positions: int = values.NUM_PATCH_POSITIONS):
  """Dense per-step tensors (leading axis T) -> one flat token stream of the whole episode.

  Returns tokens, kinds, obs_positions, timesteps (the step of each token) and, for tasks with an
  image field, patches, patch_rows and patch_cols.
  """
  action = steps["action"]
  num_steps = tf.shape(action)[0]
  fields = []
  has_images = any(f.modality == "image" for _, f in spec.observation_fields())
  for path, field in spec.observation_fields():
    value = get_path(steps["observation"], path)
    if field.modality == "text":
      if text_tokenizer is None:
        raise ValueError(f"task {spec.name!r}: observation/{path} is text: a TextTokenizer is needed")
      ids = text_tokenizer.vocab.encode_tf(value)
      fields.append(_per_step(tf.cast(ids, tf.int32), TokenKind.OBS_TEXT, num_steps))
    elif field.modality == "image":
      h, w = field.shape[:2]
      patches = image_to_patches(tf.cast(value, tf.uint8))
      rows, cols = values.patch_intervals(h, w, num_patch_positions)
      tile = lambda a: tf.tile(tf.constant(a)[None], [num_steps, 1, 1])
      zeros = tf.zeros(tf.shape(patches)[:2], tf.int32)
      fields.append(_per_step(zeros, TokenKind.IMAGE, num_steps, patches, tile(rows), tile(cols)))
    elif field.modality == "discrete":
      flat = tf.reshape(value, [num_steps, -1])
      fields.append(_per_step(tokenize_discrete(flat, layout), TokenKind.OBS_DISCRETE, num_steps))
    else:
      flat = tf.reshape(value, [num_steps, -1])
      ids = tokenize_continuous(flat, layout, mu_law=field.mu_law)
      fields.append(_per_step(ids, TokenKind.OBS_CONTINUOUS, num_steps))

  fields = [_fill_image_fields(f, has_images) for f in fields]
  obs = {k: tf.concat([f[k] for f in fields], axis=1) for k in fields[0]} if fields else None
  if obs is not None:
    positions = tf.ragged.range(obs["tokens"].row_lengths())
    obs["obs_positions"] = tf.minimum(tf.cast(positions, tf.int32), max_obs_positions - 1)
  separator = tf.fill([num_steps, 1], layout.separator_id)
  tail = [_per_step(separator, TokenKind.SEPARATOR, num_steps),
          _per_step(tokenize_action_tf(action, spec, layout), TokenKind.ACTION, num_steps)]
  for f in tail:
    f["obs_positions"] = tf.zeros_like(f["tokens"])
  parts = ([obs] if obs is not None else []) + tail
  parts = [_fill_image_fields(p, has_images) for p in parts]
  stream = {k: tf.concat([p[k] for p in parts], axis=1) for k in parts[0]}
  out = {k: v.flat_values for k, v in stream.items()}
  out["timesteps"] = tf.cast(stream["tokens"].value_rowids(), tf.int32)
  return out


def tokenize_action_tf(action, spec: TaskSpec, layout: VocabLayout):
  a = spec.action
  flat = tf.reshape(action, [tf.shape(action)[0], -1])
  if a.kind == "continuous":
    low = tf.constant(a.low, tf.float64)
    high = tf.constant(a.high, tf.float64)
    unit = tf.clip_by_value(2.0 * (tf.cast(flat, tf.float64) - low) / (high - low) - 1.0, -1.0, 1.0)
    return tokenize_continuous(unit, layout, mu_law=False)
  tf.debugging.assert_less(tf.cast(flat, tf.int64), tf.constant(a.num_values, tf.int64),
                           f"task {spec.name!r}: action outside the action space {a.num_values}")
  return tokenize_discrete(flat, layout)


def tokenize_text(text, text_tokenizer, layout: VocabLayout, kind: TokenKind = TokenKind.TEXT,
                  append_eos: bool = True):
  """A string -> a stream of text tokens (document text is a training target; EOS closes it)."""
  ids = tf.cast(text_tokenizer.vocab.encode_tf(text), tf.int32)
  if append_eos:
    ids = tf.concat([ids, [text_tokenizer.vocab.eos_id]], 0)
  n = tf.shape(ids)[0]
  return {"tokens": ids, "kinds": tf.fill([n], int(kind)), "obs_positions": tf.zeros([n], tf.int32)}


def image_tokens(image, num_patch_positions: int = values.NUM_PATCH_POSITIONS,
                 max_obs_positions: int = MAX_OBS_POSITIONS):
  """An HxWx3 uint8 image -> a stream of IMAGE tokens (patches, intervals, local positions)."""
  h, w = image.shape[0], image.shape[1]
  if h is None or w is None or h % P or w % P:
    raise ValueError(f"image_tokens: static HxW multiples of {P} needed, got {image.shape}")
  patches = image_to_patches(tf.cast(image, tf.uint8))
  rows, cols = values.patch_intervals(h, w, num_patch_positions)
  n = rows.shape[0]
  return {
      "tokens": tf.zeros([n], tf.int32),
      "kinds": tf.fill([n], int(TokenKind.IMAGE)),
      "obs_positions": tf.minimum(tf.range(n, dtype=tf.int32), max_obs_positions - 1),
      "patches": patches,
      "patch_rows": tf.constant(rows),
      "patch_cols": tf.constant(cols),
  }
