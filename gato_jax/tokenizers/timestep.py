"""Timesteps (observation, separator, action) as token streams, and sampled actions back.

`field_ids` / `action_ids` are the transforms, for any array module (the TF episode tokenizer in
tf_ops.py calls them with TensorFlow's NumPy API); the rest is the acting side in NumPy, which checks
each value first and names the field in its error.
"""

from typing import Any, Mapping

import numpy as np

from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec, get_path
from gato_jax.tokenizers import stream, values
from gato_jax.tokenizers.layout import TokenKind, VocabLayout

MAX_OBS_POSITIONS = 512


class TextTokenizer:
  """SentencePiece text through seqio's vocabulary class (the same object the SeqIO tasks use)."""

  def __init__(self, sentencepiece_model: str):
    import seqio  # heavy import, only when text is needed
    self.path = sentencepiece_model
    self.vocab = seqio.SentencePieceVocabulary(sentencepiece_model)

  @property
  def vocab_size(self) -> int:
    return self.vocab.vocab_size

  def encode(self, text) -> np.ndarray:
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    return np.asarray(self.vocab.encode(text), np.int32)

  def decode(self, ids) -> str:
    return self.vocab.decode([int(i) for i in ids])


def field_ids(value, field: FieldSpec, layout: VocabLayout, xp=np):
  """A discrete or continuous field's values (any leading axes) -> ids of the same shape."""
  if field.modality == "discrete":
    return values.tokenize_discrete(value, layout, xp)
  return values.tokenize_continuous(value, layout, mu_law=field.mu_law, xp=xp)


def action_ids(action, spec: ActionSpec, layout: VocabLayout, xp=np):
  """Actions [..., spec.size] -> ids of the same shape (continuous ones rescaled to [-1, 1] first)."""
  if spec.kind == "continuous":
    unit = values.action_to_unit(action, spec.low, spec.high, xp)
    return values.tokenize_continuous(unit, layout, mu_law=False, xp=xp)
  return values.tokenize_discrete(action, layout, xp)


def tokenize_field(value, field: FieldSpec, layout: VocabLayout, text_tokenizer=None,
                   name: str = "field", num_patch_positions: int = values.NUM_PATCH_POSITIONS):
  """One observation field -> a token stream (obs_positions left at 0; the caller numbers them)."""
  if field.modality == "text":
    if text_tokenizer is None:
      raise ValueError(f"{name}: a text field needs a TextTokenizer")
    ids = text_tokenizer.encode(value)
    if len(ids) and ids.max() >= layout.text_vocab_size:
      raise ValueError(f"{name}: SentencePiece id {ids.max()} >= text_vocab_size {layout.text_vocab_size}")
    return stream.of_ids(ids, TokenKind.OBS_TEXT)
  if field.modality == "image":
    image = values.check_image(value, name)
    rows, cols = values.patch_intervals(*image.shape[:2], num_patch_positions)
    return stream.of_patches(values.image_to_patches(image), rows, cols)
  value = np.asarray(value)
  if value.shape != field.shape:
    raise ValueError(f"{name}: shape {value.shape}, expected {field.shape}")
  if field.modality == "discrete":
    values.check_integers(value, min(field.num_values, layout.num_discrete_values), name)
    return stream.of_ids(field_ids(value, field, layout), TokenKind.OBS_DISCRETE)
  return stream.of_ids(field_ids(values.check_finite(value, name), field, layout), TokenKind.OBS_CONTINUOUS)


def tokenize_observation(observation: Mapping[str, Any], spec: TaskSpec, layout: VocabLayout,
                         text_tokenizer=None, max_obs_positions: int = MAX_OBS_POSITIONS,
                         num_patch_positions: int = values.NUM_PATCH_POSITIONS) -> dict[str, np.ndarray]:
  """Observation fields in lexicographic key order, each row-major, then the separator."""
  streams = []
  for path, field in spec.observation_fields():
    try:
      value = get_path(observation, path)
    except (KeyError, TypeError):
      raise ValueError(f"task {spec.name!r}: observation is missing field {path!r}") from None
    streams.append(tokenize_field(value, field, layout, text_tokenizer, f"task {spec.name!r}: "
                                  f"observation/{path}", num_patch_positions))
  obs = stream.number_positions(stream.concat(streams), max_obs_positions)
  return stream.concat([obs, stream.of_ids([layout.separator_id], TokenKind.SEPARATOR)])


def tokenize_action(action, spec: ActionSpec, layout: VocabLayout) -> np.ndarray:
  """One action (checked against the action space) -> its spec.size ids."""
  a = np.asarray(action).reshape(-1)
  if a.shape != (spec.size,):
    raise ValueError(f"action {a.tolist()} has {a.size} values, expected {spec.size} ({spec})")
  if spec.kind == "continuous":
    return action_ids(values.check_finite(a, "action"), spec, layout)
  if ((a < 0) | (a >= np.minimum(spec.num_values, layout.num_discrete_values))).any():
    raise ValueError(f"action {a.tolist()} is outside the action space {spec}")
  return action_ids(a.astype(np.int64), spec, layout)


def tokenize_timestep(observation, action, spec: TaskSpec, layout: VocabLayout, text_tokenizer=None,
                      **kwargs) -> dict[str, np.ndarray]:
  """[observation tokens..., separator, action tokens...] for one step."""
  obs = tokenize_observation(observation, spec, layout, text_tokenizer, **kwargs)
  return stream.concat([obs, stream.of_ids(tokenize_action(action, spec.action, layout), TokenKind.ACTION)])


def action_token_ranges(spec: ActionSpec, layout: VocabLayout) -> list[tuple[int, int]]:
  """The [lo, hi) id range each action token may take, in order: sampling is restricted to it."""
  if spec.kind == "continuous":
    return [layout.continuous_range()] * spec.size
  return [(layout.discrete_offset, layout.discrete_offset + n) for n in spec.num_values]


def action_from_tokens(ids, spec: ActionSpec, layout: VocabLayout):
  """Sampled action ids -> a value of the environment's action space (int, int array or float array)."""
  ids = np.asarray(ids).reshape(-1)
  if ids.shape != (spec.size,):
    raise ValueError(f"expected {spec.size} action tokens, got {ids.shape[0]}")
  if spec.kind == "continuous":
    unit = values.detokenize_continuous(ids, layout, mu_law=False)
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    return ((unit + 1.0) / 2.0 * (high - low) + low).reshape(spec.shape).astype(np.float32)
  a = values.detokenize_discrete(ids, layout)
  if (a >= np.asarray(spec.num_values)).any():
    raise ValueError(f"action ids {ids.tolist()} decode to {a.tolist()}, outside {spec.num_values}")
  return int(a[0]) if spec.kind == "discrete" else a.reshape(spec.shape)
