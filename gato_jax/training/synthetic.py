"""Synthetic input (`config.data.mixture = "synthetic"`): contract-conforming random batches for
benchmarks and tests, with the data iterator's `get_next / save / restore` contract.

Row r of the global batch at step s depends only on (seed, s, r), so a process reading rows
[p * B / P, (p + 1) * B / P) sees exactly its slice of what one process would see: runs with any
number of processes train on the same global batches.

With `max_image_tokens` = K >= 0 (config.model.max_image_tokens: the model encodes at most K patches
per sequence) image positions past the K-th of a row become continuous observations, so synthetic
batches stay valid inputs for configs whose real data has few or no images.
"""

import json

import numpy as np

from gato_jax import features
from gato_jax.episodes import PATCH_SIZE
from gato_jax.tokenizers.layout import TokenKind

TASK_NAMES = ("synthetic_a", "synthetic_b", "synthetic_c")  # random_batch draws task_index in [0, 3)
_BLOCK = 4  # random_batch makes every 4th row a text document: generate rows in blocks of 4


class SyntheticIterator:
  """Per-process batches of `features.random_batch` rows; its state is the step counter."""

  task_names = TASK_NAMES

  def __init__(self, layout, global_batch_size: int, length: int, *, seed: int = 0, process_index: int = 0,
               process_count: int = 1, patch_size: int = PATCH_SIZE, num_patch_positions: int = 128,
               max_obs_positions: int = 512, max_image_tokens: int = -1):
    if global_batch_size % process_count:
      raise ValueError(f"batch_size={global_batch_size} is not divisible by {process_count} processes")
    self._layout = layout
    self._length = length
    self._seed = seed
    self._rows = global_batch_size // process_count
    self._first_row = process_index * self._rows
    self._kwargs = dict(patch_size=patch_size, num_patch_positions=num_patch_positions,
                        max_obs_positions=max_obs_positions)
    self._max_image_tokens = max_image_tokens
    self.step = 0

  def _block(self, block: int):
    rng = np.random.default_rng([self._seed, self.step, block])
    return features.random_batch(rng, _BLOCK, self._length, self._layout, **self._kwargs)

  def get_next(self) -> dict[str, np.ndarray]:
    first, last = self._first_row, self._first_row + self._rows
    blocks = [self._block(b) for b in range(first // _BLOCK, -(-last // _BLOCK))]
    offset = first // _BLOCK * _BLOCK
    batch = {k: np.concatenate([b[k] for b in blocks])[first - offset:last - offset] for k in blocks[0]}
    if self._max_image_tokens >= 0:
      self._cap_images(batch)
    self.step += 1
    return batch

  def _cap_images(self, batch) -> None:
    """Image positions past the first `max_image_tokens` of a row -> continuous observations."""
    image = batch["kinds"] == TokenKind.IMAGE
    demote = image & (np.cumsum(image, axis=1) > self._max_image_tokens)
    token = self._layout.continuous_offset + self._layout.num_continuous_bins // 2
    batch["kinds"][demote] = TokenKind.OBS_CONTINUOUS
    batch["tokens"][demote] = token
    for name in ("patches", "patch_rows", "patch_cols"):
      batch[name][demote] = 0
    # Position t is the target of position t - 1.
    shifted = np.zeros_like(demote)
    shifted[:, :-1] = demote[:, 1:]
    batch["target_kinds"][shifted] = TokenKind.OBS_CONTINUOUS
    batch["targets"][shifted] = token

  def __iter__(self):
    return self

  def __next__(self):
    return self.get_next()

  def save(self, filename) -> None:
    with open(filename, "w") as f:
      json.dump({"step": self.step, "seed": self._seed, "first_row": self._first_row, "rows": self._rows}, f)

  def restore(self, filename) -> None:
    with open(filename) as f:
      state = json.load(f)
    expected = {"seed": self._seed, "first_row": self._first_row, "rows": self._rows}
    saved = {k: state[k] for k in expected}
    if saved != expected:
      raise ValueError(f"{filename}: synthetic iterator state {saved} does not match this run's {expected}")
    self.step = int(state["step"])
