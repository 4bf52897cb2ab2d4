"""NumPy tokenizers for values: mu-law companding, continuous binning, discrete ids, image patches.

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


def mu_law_encode(x, mu: float = MU, m: float = M):
  x = np.asarray(x, np.float64)
  return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(m * mu)


def mu_law_decode(y, mu: float = MU, m: float = M):
  y = np.asarray(y, np.float64)
  return np.sign(y) * np.expm1(np.abs(y) * np.log1p(m * mu)) / mu


def tokenize_continuous(x, layout: VocabLayout, mu_law: bool = True) -> np.ndarray:
  """Floats -> ids in [continuous_offset, continuous_offset + bins), flattened row-major."""
  x = np.asarray(x, np.float64).reshape(-1)
  if not np.isfinite(x).all():
    raise ValueError(f"tokenize_continuous: non-finite values {x[~np.isfinite(x)][:4].tolist()}")
  y = np.clip(mu_law_encode(x) if mu_law else x, -1.0, 1.0)
  bins = layout.num_continuous_bins
  b = np.clip(np.floor((y + 1.0) / 2.0 * bins), 0, bins - 1).astype(np.int32)
  return b + np.int32(layout.continuous_offset)


def detokenize_continuous(ids, layout: VocabLayout, mu_law: bool = True) -> np.ndarray:
  """Ids -> bin centres, then inverse mu-law where it was applied."""
  ids = np.asarray(ids, np.int64)
  lo, hi = layout.continuous_range()
  if ((ids < lo) | (ids >= hi)).any():
    raise ValueError(f"detokenize_continuous: ids outside the continuous range [{lo}, {hi}): "
                     f"{ids[(ids < lo) | (ids >= hi)][:4].tolist()}")
  bins = layout.num_continuous_bins
  centre = -1.0 + (ids - lo + 0.5) * (2.0 / bins)
  return mu_law_decode(centre) if mu_law else centre


def tokenize_discrete(x, layout: VocabLayout) -> np.ndarray:
  """Integers in [0, num_discrete_values) -> ids of the discrete range, flattened row-major."""
  x = np.asarray(x).reshape(-1)
  if x.size and not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"tokenize_discrete: expected integers, got dtype {x.dtype}")
  n = layout.num_discrete_values
  if ((x < 0) | (x >= n)).any():
    raise ValueError(f"tokenize_discrete: values outside [0, {n}): {x[(x < 0) | (x >= n)][:4].tolist()}")
  return x.astype(np.int32) + np.int32(layout.discrete_offset)


def detokenize_discrete(ids, layout: VocabLayout) -> np.ndarray:
  ids = np.asarray(ids, np.int64)
  lo, hi = layout.discrete_range()
  if ((ids < lo) | (ids >= hi)).any():
    raise ValueError(f"detokenize_discrete: ids outside the discrete range [{lo}, {hi})")
  return (ids - lo).astype(np.int64)


def check_image(image, field: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"{field}: expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
  if image.shape[0] % PATCH_SIZE or image.shape[1] % PATCH_SIZE:
    raise ValueError(f"{field}: image sides must be multiples of {PATCH_SIZE} (pad it), got {image.shape[:2]}")
  return image


def image_to_patches(image, field: str = "image") -> np.ndarray:
  """HxWx3 uint8 -> [H/16 * W/16, 16, 16, 3] uint8 patches in raster order (pixels stay uint8)."""
  image = check_image(image, field)
  h, w = image.shape[0] // PATCH_SIZE, image.shape[1] // PATCH_SIZE
  patches = image.reshape(h, PATCH_SIZE, w, PATCH_SIZE, 3).transpose(0, 2, 1, 3, 4)
  return patches.reshape(h * w, PATCH_SIZE, PATCH_SIZE, 3)


def patches_to_image(patches, height: int, width: int) -> np.ndarray:
  h, w = height // PATCH_SIZE, width // PATCH_SIZE
  p = np.asarray(patches).reshape(h, w, PATCH_SIZE, PATCH_SIZE, 3).transpose(0, 2, 1, 3, 4)
  return p.reshape(height, width, 3)


def patch_intervals(height: int, width: int, num_positions: int = NUM_PATCH_POSITIONS):
  """Row and column pixel intervals of every patch (raster order), normalised by the image size and
  quantised to `num_positions`: int32 [N, 2] arrays of [start, end) with end exclusive (end > start)."""
  def axis(size):
    edges = np.arange(0, size + 1, PATCH_SIZE)
    start = (edges[:-1] * num_positions) // size
    end = np.maximum((edges[1:] * num_positions) // size, start + 1)
    return np.stack([start, end], axis=-1).astype(np.int32)
  rows, cols = axis(height), axis(width)
  nh, nw = len(rows), len(cols)
  return np.repeat(rows, nw, axis=0), np.tile(cols, (nh, 1))
