"""A token stream: the per-token fields of gato_jax/features.py as one dict of equally long arrays.

Every producer of tokens (the timestep tokenizer, the TF episode tokenizer, prompting, captions, the
acting agent, caption generation) builds and joins streams with these helpers, so a stream has one set
of keys, dtypes and ranks everywhere. Like the value tokenizers they take `xp`: NumPy (default) or
TensorFlow's NumPy API (`tensorflow.experimental.numpy`) inside the input pipeline's graph.

`image_fields=False` leaves out patches / patch_rows / patch_cols: the input pipeline carries them only
for tasks with an image field (a patch costs 768 bytes a token); `with_image_fields` adds zeros.
"""

import numpy as np

from gato_jax.episodes import PATCH_SIZE
from gato_jax.tokenizers import values
from gato_jax.tokenizers.layout import TokenKind

# Field -> (NumPy dtype, shape of one token's entry).
STREAM_FIELDS = {
    "tokens": (np.int32, ()),
    "kinds": (np.int32, ()),
    "obs_positions": (np.int32, ()),
    "patches": (np.uint8, (PATCH_SIZE, PATCH_SIZE, 3)),
    "patch_rows": (np.int32, (2,)),  # [start, end) of the patch's rows, quantised
    "patch_cols": (np.int32, (2,)),
}
IMAGE_FIELDS = ("patches", "patch_rows", "patch_cols")


def _zeros(key: str, n, xp):
  dtype, shape = STREAM_FIELDS[key]
  return xp.zeros((n,) + shape, dtype=dtype)


def empty(n: int = 0, xp=np, image_fields: bool = True) -> dict:
  """`n` PAD positions (all fields zero)."""
  return {k: _zeros(k, n, xp) for k in STREAM_FIELDS if image_fields or k not in IMAGE_FIELDS}


def with_image_fields(s: dict, xp=np) -> dict:
  """The stream with zero patches / intervals where it has none, so it joins a stream with images."""
  n = xp.size(s["tokens"])
  return {**s, **{k: _zeros(k, n, xp) for k in IMAGE_FIELDS if k not in s}}


def of_ids(ids, kind: TokenKind, xp=np, image_fields: bool = True) -> dict:
  """Plain ids of one kind, any shape flattened row-major (no patches, local position 0)."""
  tokens = xp.reshape(xp.asarray(ids, dtype=xp.int32), (-1,))
  s = {"tokens": tokens, "kinds": xp.full_like(tokens, int(kind)), "obs_positions": xp.zeros_like(tokens)}
  return with_image_fields(s, xp) if image_fields else s


def of_patches(patches, patch_rows, patch_cols, xp=np) -> dict:
  """Patches [n, P, P, 3] as IMAGE tokens with their intervals (local positions 0: the caller numbers
  its observation)."""
  tokens = xp.zeros_like(patch_rows[:, 0])
  return {"tokens": tokens, "kinds": xp.full_like(tokens, int(TokenKind.IMAGE)), "obs_positions": tokens,
          "patches": xp.asarray(patches, dtype=xp.uint8), "patch_rows": xp.asarray(patch_rows),
          "patch_cols": xp.asarray(patch_cols)}


def of_image(image, num_patch_positions: int, max_obs_positions: int, xp=np) -> dict:
  """An HxWx3 uint8 image (static H, W) as its numbered IMAGE tokens (captions, caption generation)."""
  rows, cols = values.patch_intervals(image.shape[0], image.shape[1], num_patch_positions)
  patches = values.image_to_patches(image, xp)
  return number_positions(of_patches(patches, xp.asarray(rows), xp.asarray(cols), xp), max_obs_positions, xp)


def number_positions(s: dict, max_obs_positions: int, xp=np) -> dict:
  """Local positions 0, 1, ... (capped at max_obs_positions - 1), as an observation's tokens get."""
  positions = xp.arange(xp.size(s["tokens"]), dtype=xp.int32)
  return {**s, "obs_positions": xp.minimum(positions, max_obs_positions - 1)}


def concat(streams, xp=np) -> dict:
  """Streams joined in order (no streams: an empty one)."""
  streams = list(streams)
  if not streams:
    return empty(0, xp)
  return {k: xp.concatenate([s[k] for s in streams], axis=0) for k in streams[0]}


def pad(streams, length: int, left: bool) -> dict[str, np.ndarray]:
  """Per-row NumPy streams (None = an all-PAD row) padded with PAD to `length`: a [B, length] batch."""
  rows = []
  for s in streams:
    n = 0 if s is None else len(s["tokens"])
    if n > length:
      raise ValueError(f"a chunk of {n} tokens does not fit in {length}")
    parts = [] if s is None else [s]
    rows.append(concat([empty(length - n)] + parts if left else parts + [empty(length - n)]))
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
