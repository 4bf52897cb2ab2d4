"""Shared by the importer tests: a data_dir with a built-in task and SentencePiece, and a few
training steps of the demo's tiny config on a mixture naming imported datasets."""

import os

import numpy as np

from gato_jax.data import pipeline, sources
from testlib import data_testing as testing
from gato_jax.training import loop


def base_data_dir(data_dir) -> list:
  """The built-in cartpole dataset (a short build) and the SentencePiece model text needs."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  data_pipelines.build("cartpole", os.fspath(data_dir), episodes=3, validation_episodes=1, return_episodes=2)
  testing.train_tiny_sentencepiece(os.path.join(os.fspath(data_dir), "sentencepiece", "text_512.model"),
                                   [" ".join(testing.WORDS)] * 4, vocab_size=64)
  return [sources.discover_datasets(data_dir)["cartpole"]]


def train_a_few_steps(data_dir, workdir, refs, mixture: str, *, steps: int = 2, sequence_length: int = 96,
                      image_tokens: int = 0):
  """`steps` optimizer steps of the tiny config (the real model) on `mixture`; returns (config, result).
  `image_tokens`: config.model.max_image_tokens (-1 encodes every position: imported frames fill a
  whole window, and unencoded image positions are NaN by design)."""
  config = testing.tiny_config(data_dir, mixture=mixture, sequence_length=sequence_length, batch_size=8)
  config.model.max_image_tokens = image_tokens
  config.num_train_steps = steps
  config.checkpoint_every_steps = steps
  config.log_every_steps = 1
  config.peak_flops_per_device = 1e9
  iterator = pipeline.make_iterator(config, "train", 0, 1, config.seed, datasets=refs)
  result = loop.train(config, os.fspath(workdir), data_iterator=iterator, task_names=[r.name for r in refs])
  assert result.step == steps and np.isfinite(result.last_metrics["loss"]), result.last_metrics
  return config, result
