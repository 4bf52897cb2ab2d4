"""A few-thousand-parameter Gato config and feature helpers, for fast tests of anything built on the model."""

import numpy as np

from gato_jax.features import INPUT_FEATURES, random_batch
from gato_jax.tokenizers.layout import VocabLayout


def tiny_config(**model_overrides):
  """experiments/base.py with a 2-layer, 32-wide model and a 64-id text vocabulary (vocab_size 256)."""
  from experiments import base  # pylint: disable=g-import-not-at-top  (experiments is a top-level package)
  c = base.base_config()
  c.vocab.text_vocab_size = 64
  c.vocab.num_continuous_bins = 64
  c.vocab.num_discrete_values = 64
  c.vocab.pad_to_multiple = 64
  m = c.model
  m.num_layers, m.num_heads, m.head_dim, m.embed_dim, m.mlp_dim = 2, 2, 16, 32, 64
  m.resnet_groups, m.patch_channels = 4, 8
  m.max_obs_positions, m.max_length = 16, 64
  m.dropout_rate = 0.0
  for key, value in model_overrides.items():
    setattr(m, key, value)
  return c


def tiny_batch(config, batch_size: int = 4, length: int = 24, seed: int = 0):
  """A contract-conforming batch (gato_jax.features.random_batch): images, discrete and continuous
  observations, separators and actions, and a text document in every 4th row."""
  layout = VocabLayout.from_config(config.vocab)
  return random_batch(np.random.default_rng(seed), batch_size, length, layout,
                      num_patch_positions=config.model.num_patch_positions,
                      max_obs_positions=config.model.max_obs_positions)


def model_inputs(batch, start: int = 0, stop: int | None = None):
  """The model's input features of a batch, optionally sliced to positions [start, stop)."""
  return {name: batch[name][:, start:stop] for name in INPUT_FEATURES}
