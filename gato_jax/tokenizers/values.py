"""Value tokenizers, written once for any array module: mu-law, continuous bins, discrete ids, image patches.

Each transform takes `xp`: NumPy (`np`, the default: acting, evaluation) or TensorFlow's NumPy API
(`tensorflow.experimental.numpy`, the SeqIO graph), so the agent and the data pipeline run the same
code and cannot drift apart. The transforms do not validate: NumPy callers check their inputs first
with the `check_*` functions (one clear error naming the field), the input pipeline checks episodes
when it reads them (gato_jax/data/sources.py check_episode).

Continuous values: F(x) = sgn(x) log(1 + mu |x|) / log(1 + M mu) (mu = 100, M = 256), clipped to
[-1, 1] as the paper does (so |x| > M saturates at the outermost bins), then 1024 uniform bins over
[-1, 1]; decoding returns the bin centre, then the inverse companding. Fields already in [-1, 1]
(e.g. normalised actions) skip companding and are only clipped and binned.
"""

import numpy as np

from gato_jax.episodes import PATCH_SIZE  # the schema's: image sides are multiples of it
from gato_jax.tokenizers.layout import VocabLayout

MU = 100.0
M = 256.0
NUM_PATCH_POSITIONS = 128


def mu_law_encode(x, mu: float = MU, m: float = M, xp=np):
  x = xp.asarray(x, dtype=xp.float64)
  return xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.log1p(m * mu)


def mu_law_decode(y, mu: float = MU, m: float = M, xp=np):
  y = xp.asarray(y, dtype=xp.float64)
  return xp.sign(y) * xp.expm1(xp.abs(y) * np.log1p(m * mu)) / mu


def _clip(x, low: float, high: float, xp):
  # np.clip's semantics; tnp.clip would first broadcast both bounds to x's shape (two more tensors).
  return xp.minimum(xp.maximum(x, low), high)


def tokenize_continuous(x, layout: VocabLayout, mu_law: bool = True, xp=np):
  """Floats of any shape -> int32 ids of the same shape in [continuous_offset, + bins)."""
  x = xp.asarray(x, dtype=xp.float64)
  y = _clip(mu_law_encode(x, xp=xp) if mu_law else x, -1.0, 1.0, xp)
  bins = layout.num_continuous_bins
  b = _clip(xp.floor((y + 1.0) / 2.0 * bins), 0.0, float(bins - 1), xp)
  return xp.asarray(b, dtype=xp.int32) + np.int32(layout.continuous_offset)


def tokenize_discrete(x, layout: VocabLayout, xp=np):
  """Integers in [0, num_discrete_values) of any shape -> int32 ids of the discrete range."""
  return xp.asarray(x, dtype=xp.int32) + np.int32(layout.discrete_offset)


def action_to_unit(action, low, high, xp=np):
  """Continuous actions [..., n] rescaled linearly from [low, high] (length n) to [-1, 1]."""
  a = xp.asarray(action, dtype=xp.float64)
  low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
  return _clip(2.0 * (a - low) / (high - low) - 1.0, -1.0, 1.0, xp)


def image_to_patches(images, xp=np):
  """[H, W, 3] or [T, H, W, 3] uint8 -> [(T,) H/16 * W/16, 16, 16, 3] patches in raster order.

  H and W must be static multiples of PATCH_SIZE (check_image says so for NumPy inputs).
  """
  lead = len(images.shape) - 3
  h, w = images.shape[-3] // PATCH_SIZE, images.shape[-2] // PATCH_SIZE
  x = xp.reshape(images, (-1, h, PATCH_SIZE, w, PATCH_SIZE, 3))
  x = xp.transpose(x, (0, 1, 3, 2, 4, 5))
  return xp.reshape(x, ((-1,) if lead else ()) + (h * w, PATCH_SIZE, PATCH_SIZE, 3))


def patch_intervals(height: int, width: int, num_positions: int = NUM_PATCH_POSITIONS):
  """Row and column pixel intervals of every patch (raster order), normalised by the image size and
  quantised to `num_positions`: int32 [N, 2] arrays of [start, end) with end exclusive (end > start).
  Static (shapes only), so NumPy serves the graph too."""
  def axis(size):
    edges = np.arange(0, size + 1, PATCH_SIZE)
    start = (edges[:-1] * num_positions) // size
    end = np.maximum((edges[1:] * num_positions) // size, start + 1)
    return np.stack([start, end], axis=-1).astype(np.int32)
  rows, cols = axis(height), axis(width)
  nh, nw = len(rows), len(cols)
  return np.repeat(rows, nw, axis=0), np.tile(cols, (nh, 1))


# ------------------------------------------------------------------------------------------------
# The way back (acting and evaluation only: NumPy).
# ------------------------------------------------------------------------------------------------

def _check_ids(ids, lo: int, hi: int, what: str) -> np.ndarray:
  ids = np.asarray(ids, np.int64)
  outside = (ids < lo) | (ids >= hi)
  if outside.any():
    raise ValueError(f"detokenize_{what}: ids outside the {what} range [{lo}, {hi}): {ids[outside][:4].tolist()}")
  return ids


def detokenize_continuous(ids, layout: VocabLayout, mu_law: bool = True) -> np.ndarray:
  """Ids -> bin centres, then inverse mu-law where it was applied."""
  lo, hi = layout.continuous_range()
  ids = _check_ids(ids, lo, hi, "continuous")
  centre = -1.0 + (ids - lo + 0.5) * (2.0 / layout.num_continuous_bins)
  return mu_law_decode(centre) if mu_law else centre


def detokenize_discrete(ids, layout: VocabLayout) -> np.ndarray:
  lo, hi = layout.discrete_range()
  return _check_ids(ids, lo, hi, "discrete") - lo


def patches_to_image(patches, height: int, width: int) -> np.ndarray:
  h, w = height // PATCH_SIZE, width // PATCH_SIZE
  p = np.asarray(patches).reshape(h, w, PATCH_SIZE, PATCH_SIZE, 3).transpose(0, 2, 1, 3, 4)
  return p.reshape(height, width, 3)


# ------------------------------------------------------------------------------------------------
# Checks of NumPy inputs, before a transform: one ValueError naming the field.
# ------------------------------------------------------------------------------------------------

def check_finite(x, field: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if not np.isfinite(x).all():
    raise ValueError(f"{field}: non-finite values {x[~np.isfinite(x)][:4].tolist()}; expected finite floats")
  return x


def check_integers(x, num_values, field: str) -> np.ndarray:
  """Integers with 0 <= x < num_values (a bound, or one per entry of the last axis)."""
  x = np.asarray(x)
  if x.size and not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{field}: expected integers, got dtype {x.dtype}")
  outside = (x < 0) | (x >= np.asarray(num_values))
  if outside.any():
    raise ValueError(f"{field}: values {x[outside][:4].tolist()} outside [0, {num_values})")
  return x


def check_image(image, field: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"{field}: expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
  if image.shape[0] % PATCH_SIZE or image.shape[1] % PATCH_SIZE:
    raise ValueError(f"{field}: image sides must be multiples of {PATCH_SIZE} (pad it), got {image.shape[:2]}")
  return image
