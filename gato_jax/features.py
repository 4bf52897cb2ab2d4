"""The model's input features: the one contract between the SeqIO feature converter and the Flax model.

Per example (a batch adds a leading B axis), L = sequence length, P = patch size (16):

  tokens         int32   [L]           vocabulary ids; 0 at IMAGE and PAD positions
  patches        uint8   [L, P, P, 3]  pixels of the patch at IMAGE positions, zeros elsewhere
                                       (normalised to [-1, 1] / 4 on the device, never on the host)
  kinds          int32   [L]           TokenKind of each position (gato_jax.tokenizers.TokenKind)
  obs_positions  int32   [L]           index of the token inside its timestep's observation
                                       (0 .. max_obs_positions-1); 0 for actions, text, separators
  patch_rows     int32   [L, 2]        [start, end) of the patch's row interval quantised to
                                       num_patch_positions (128); zeros for non-image tokens
  patch_cols     int32   [L, 2]        the same for columns
  targets        int32   [L]           the id of the NEXT token of the sequence
  target_kinds   int32   [L]           TokenKind of that next token (PAD past the end)
  loss_mask      float32 [L]           1.0 where the next token is TEXT or ACTION, else 0.0
  task_index     int32   []            index of the example's task in its mixture (for reports)

A window of L + 1 tokens gives L inputs and L targets, so every input position has a target.
"""

import numpy as np

from gato_jax.episodes import PATCH_SIZE
from gato_jax.tokenizers.layout import TokenKind
from gato_jax.tokenizers.stream import STREAM_FIELDS

# The per-token features the model reads (the embedding function's inputs: a token stream's fields);
# the rest are the loss's.
INPUT_FEATURES = ("tokens", "patches", "kinds", "obs_positions", "patch_rows", "patch_cols")

FEATURE_DTYPES = {
    **{name: STREAM_FIELDS[name][0] for name in INPUT_FEATURES},
    "targets": np.int32,
    "target_kinds": np.int32,
    "loss_mask": np.float32,
    "task_index": np.int32,
}


def feature_shapes(length: int, patch_size: int = PATCH_SIZE) -> dict[str, tuple[int, ...]]:
  """Per-example shapes of every feature for sequence length `length` (patches of `patch_size`)."""
  per_token = {name: STREAM_FIELDS[name][1] for name in INPUT_FEATURES}
  per_token["patches"] = (patch_size, patch_size, 3)
  return {
      **{name: (length,) + shape for name, shape in per_token.items()},
      "targets": (length,),
      "target_kinds": (length,),
      "loss_mask": (length,),
      "task_index": (),
  }


def check_batch(batch, length: int, patch_size: int = PATCH_SIZE, where: str = "batch") -> int:
  """Checks a batch of features against the contract; returns the batch size.

  Raises ValueError naming the feature, its shape and dtype, and the expected ones.
  """
  expected = feature_shapes(length, patch_size)
  missing = sorted(set(expected) - set(batch))
  if missing:
    raise ValueError(f"{where}: missing features {missing}; expected {sorted(expected)}")
  batch_size = None
  for name, shape in expected.items():
    value = batch[name]
    got = tuple(value.shape)
    if batch_size is None:
      batch_size = got[0] if got else None
    if got[1:] != shape or (batch_size is not None and got[:1] != (batch_size,)):
      raise ValueError(f"{where}: feature {name!r} has shape {got}, expected (batch={batch_size}, "
                       f"*{shape}) for sequence length {length} and patch size {patch_size}")
    if np.dtype(value.dtype) != np.dtype(FEATURE_DTYPES[name]):
      raise ValueError(f"{where}: feature {name!r} has dtype {value.dtype}, "
                       f"expected {np.dtype(FEATURE_DTYPES[name]).name}")
  return batch_size


def random_batch(rng: np.random.Generator, batch_size: int, length: int, layout,
                 patch_size: int = PATCH_SIZE, num_patch_positions: int = 128, max_obs_positions: int = 512):
  """A batch that obeys the contract, for tests and benchmarks: timesteps of images, discrete and
  continuous observations, a separator and actions, with text documents mixed in."""
  n = length + 1
  kinds = np.empty((batch_size, n), np.int32)
  tokens = np.zeros((batch_size, n), np.int32)
  obs_positions = np.zeros((batch_size, n), np.int32)
  step = np.array([TokenKind.IMAGE] * 4 + [TokenKind.OBS_DISCRETE] * 2 + [TokenKind.OBS_CONTINUOUS] * 3
                  + [TokenKind.SEPARATOR] + [TokenKind.ACTION] * 2, np.int32)
  for b in range(batch_size):
    if b % 4 == 3:  # a text document
      kinds[b] = TokenKind.TEXT
      tokens[b] = rng.integers(0, layout.text_vocab_size, n)
      continue
    offset = int(rng.integers(0, len(step)))
    kinds[b] = np.resize(np.roll(step, -offset), n)
    pos = np.resize(np.roll(np.r_[np.arange(9), 0, 0, 0], -offset), n)
    obs_positions[b] = np.minimum(pos, max_obs_positions - 1)
  lo, hi = layout.discrete_range()
  clo, chi = layout.continuous_range()
  for kind, (low, high) in ((TokenKind.OBS_DISCRETE, (lo, hi)), (TokenKind.OBS_CONTINUOUS, (clo, chi)),
                            (TokenKind.ACTION, (lo, lo + 8))):
    where = kinds == kind
    tokens[where] = rng.integers(low, high, int(where.sum()))
  tokens[kinds == TokenKind.SEPARATOR] = layout.separator_id
  image = kinds == TokenKind.IMAGE
  tokens[image] = 0
  patches = np.zeros((batch_size, n, patch_size, patch_size, 3), np.uint8)
  patches[image] = rng.integers(0, 256, (int(image.sum()), patch_size, patch_size, 3), dtype=np.uint8)
  quarter = num_patch_positions // 2
  rows = np.zeros((batch_size, n, 2), np.int32)
  cols = np.zeros((batch_size, n, 2), np.int32)
  rows[image] = (0, quarter)
  cols[image] = (quarter, num_patch_positions)
  target_kinds = kinds[:, 1:]
  return {
      "tokens": tokens[:, :-1],
      "patches": patches[:, :-1],
      "kinds": kinds[:, :-1],
      "obs_positions": obs_positions[:, :-1],
      "patch_rows": rows[:, :-1],
      "patch_cols": cols[:, :-1],
      "targets": tokens[:, 1:],
      "target_kinds": target_kinds,
      "loss_mask": np.isin(target_kinds, TokenKind.target_kinds()).astype(np.float32),
      "task_index": rng.integers(0, 3, batch_size).astype(np.int32),
  }
