"""A token stream: the per-token fields of gato_jax/features.py as one dict of equally long arrays.

Every producer of tokens (the NumPy timestep tokenizer, the TF episode tokenizer, prompting, the acting
agent, caption generation) builds and joins streams with these helpers, so a stream has one set of
keys, dtypes and ranks everywhere.
"""

import numpy as np

from gato_jax.episodes import PATCH_SIZE
from gato_jax.tokenizers.layout import TokenKind

# Field -> (NumPy dtype, rank of one stream: [n] or [n, ...]).
STREAM_FIELDS = {
    "tokens": (np.int32, 1),
    "kinds": (np.int32, 1),
    "obs_positions": (np.int32, 1),
    "patches": (np.uint8, 4),  # [n, PATCH_SIZE, PATCH_SIZE, 3]
    "patch_rows": (np.int32, 2),  # [n, 2]
    "patch_cols": (np.int32, 2),
}


def empty(n: int = 0) -> dict[str, np.ndarray]:
  """`n` PAD positions (all fields zero)."""
  return {
      "tokens": np.zeros((n,), np.int32),
      "kinds": np.zeros((n,), np.int32),
      "obs_positions": np.zeros((n,), np.int32),
      "patches": np.zeros((n, PATCH_SIZE, PATCH_SIZE, 3), np.uint8),
      "patch_rows": np.zeros((n, 2), np.int32),
      "patch_cols": np.zeros((n, 2), np.int32),
  }


def of_ids(ids, kind: TokenKind) -> dict[str, np.ndarray]:
  """Plain ids of one kind (no patches, local position 0)."""
  s = empty(len(ids))
  s["tokens"] = np.asarray(ids, np.int32)
  s["kinds"][:] = kind
  return s


def of_patches(patches, patch_rows, patch_cols) -> dict[str, np.ndarray]:
  """An image's patches as IMAGE tokens (local positions 0: the caller numbers its observation)."""
  s = empty(len(patches))
  s["kinds"][:] = TokenKind.IMAGE
  s["patches"], s["patch_rows"], s["patch_cols"] = np.asarray(patches, np.uint8), patch_rows, patch_cols
  return s


def number_positions(s: dict, max_obs_positions: int) -> dict[str, np.ndarray]:
  """Local positions 0, 1, ... (capped at max_obs_positions - 1), as an observation's tokens get."""
  s = dict(s)
  s["obs_positions"] = np.minimum(np.arange(len(s["tokens"])), max_obs_positions - 1).astype(np.int32)
  return s


def concat(streams) -> dict[str, np.ndarray]:
  """Streams joined in order (no streams: an empty one)."""
  streams = list(streams)
  if not streams:
    return empty()
  return {k: np.concatenate([s[k] for s in streams], axis=0) for k in streams[0]}


def concat_tf(*streams):
  """The TensorFlow version of `concat`, for the input pipeline's tensors."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (acting never needs TensorFlow)
  return {k: tf.concat([s[k] for s in streams], 0) for k in streams[0]}


def pad(streams, length: int, left: bool) -> dict[str, np.ndarray]:
  """Per-row streams (None = an all-PAD row) padded with PAD to `length`: a [B, length] batch."""
  rows = []
  for s in streams:
    n = 0 if s is None else len(s["tokens"])
    if n > length:
      raise ValueError(f"a chunk of {n} tokens does not fit in {length}")
    parts = [] if s is None else [s]
    rows.append(concat([empty(length - n)] + parts if left else parts + [empty(length - n)]))
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
