"""The loop on the real input pipeline: SeqIO mixture batches from tiny TFDS datasets, and an exact
resume that restores the tf.data iterator from the Orbax checkpoint."""

import jax
import numpy as np
import pytest

from gato_jax.data import pipeline, sources, tasks
from testlib import data_testing as testing
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import loop
from test_training import _TinyModel
import test_training_support as support

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="tiny")
def fixture_tiny(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  refs = testing.build_tiny_data_dir(data_dir, num_episodes=(8, 2))
  config = testing.tiny_config(data_dir, sequence_length=64, batch_size=8)
  config.num_train_steps = 6
  config.checkpoint_every_steps = 3
  config.log_every_steps = 3
  config.peak_flops_per_device = 1e9
  return config, refs


def _run(config, refs, workdir, **kwargs):
  layout = VocabLayout.from_config(config.vocab)
  iterator = pipeline.make_iterator(config, "train", 0, 1, config.seed, datasets=refs)
  return loop.train(config, str(workdir), model_fn=lambda rngs: _TinyModel(layout.vocab_size, rngs),
                    data_iterator=iterator, task_names=[r.name for r in refs], **kwargs)


def test_seqio_batches_train_and_resume_exactly(tiny, tmp_path):
  config, refs = tiny
  straight = _run(config, refs, tmp_path / "straight")
  assert straight.step == 6 and np.isfinite(straight.last_metrics["loss"])
  assert straight.last_metrics["num_action_targets"] > 0 and straight.last_metrics["num_text_targets"] > 0

  first = _run(config, refs, tmp_path / "resumed", stop_after_steps=3)
  assert first.step == 3
  resumed = _run(config, refs, tmp_path / "resumed")  # a fresh pipeline: its position comes from the checkpoint
  assert resumed.step == 6
  for a, b in zip(jax.tree.leaves(support.params_to_numpy(straight.state.params)),
                  jax.tree.leaves(support.params_to_numpy(resumed.state.params))):
    np.testing.assert_array_equal(a, b)
  assert straight.last_metrics["loss"] == resumed.last_metrics["loss"]

  # Control: the same resume without the iterator's state replays batches 1-3 and ends elsewhere.
  config = config.copy_and_resolve_references()
  config.checkpoint.restore_data_iterator = False
  _run(config, refs, tmp_path / "replayed", stop_after_steps=3)
  replayed = _run(config, refs, tmp_path / "replayed")
  assert replayed.last_metrics["loss"] != straight.last_metrics["loss"]
