"""NumPy tokenization of whole timesteps (observation, separator, action) and of sampled actions back.

Each returns a token stream (gato_jax/tokenizers/stream.py).
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
    patches = values.image_to_patches(value, name)
    return stream.of_patches(patches, *values.patch_intervals(*np.shape(value)[:2], num_patch_positions))
  value = np.asarray(value)
  if value.shape != field.shape:
    raise ValueError(f"{name}: shape {value.shape}, expected {field.shape}")
  if field.modality == "discrete":
    if ((value < 0) | (value >= field.num_values)).any():
      raise ValueError(f"{name}: values outside [0, {field.num_values})")
    return stream.of_ids(values.tokenize_discrete(value, layout), TokenKind.OBS_DISCRETE)
  try:
    ids = values.tokenize_continuous(value, layout, mu_law=field.mu_law)
  except ValueError as e:
    raise ValueError(f"{name}: {e}") from None
  return stream.of_ids(ids, TokenKind.OBS_CONTINUOUS)


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


def action_to_unit(action, spec: ActionSpec) -> np.ndarray:
  """Continuous actions rescaled linearly from [low, high] to [-1, 1] (flattened row-major)."""
  a = np.asarray(action, np.float64).reshape(-1)
  low, high = np.asarray(spec.low), np.asarray(spec.high)
  return np.clip(2.0 * (a - low) / (high - low) - 1.0, -1.0, 1.0)


def tokenize_action(action, spec: ActionSpec, layout: VocabLayout) -> np.ndarray:
  if spec.kind == "continuous":
    return values.tokenize_continuous(action_to_unit(action, spec), layout, mu_law=False)
  a = np.asarray(action).reshape(-1)
  if a.shape != (spec.size,) or ((a < 0) | (a >= np.asarray(spec.num_values))).any():
    raise ValueError(f"action {a.tolist()} is outside the action space {spec}")
  return values.tokenize_discrete(a.astype(np.int64), layout)


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
