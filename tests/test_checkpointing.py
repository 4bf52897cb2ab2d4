"""Orbax checkpoints: data iterators per process, keep policy, torn / interrupted checkpoints,
restoring onto another mesh, params export."""

import logging
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from gato_jax import checkpointing, partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import loop, optimizer, state as state_lib
from gato_jax.training.synthetic import SyntheticIterator
import test_training_support as support


def small_state(mesh, scale=1.0):
  """A train-state-like tree with sharded, replicated and scalar leaves."""
  w = jax.device_put(np.arange(32, dtype=np.float32).reshape(8, 4) * scale,
                     NamedSharding(mesh, P("fsdp", "tensor")))
  b = jax.device_put(np.ones(4, np.float32) * scale, NamedSharding(mesh, P()))
  return {"params": {"w": w, "b": b}, "step": jax.device_put(np.int32(7), NamedSharding(mesh, P()))}


def abstract_of(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@pytest.fixture(name="mesh")
def fixture_mesh():
  return partitioning.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))


def test_synthetic_iterator_state_round_trips_through_a_checkpoint(tmp_path, mesh):
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  iterator = SyntheticIterator(layout, 8, 16, seed=3)
  for _ in range(3):
    iterator.get_next()
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(3, small_state(mesh), data_iterator=iterator, config={"seed": 3})
  ckpt.wait_until_finished()
  expected = iterator.get_next()
  assert os.path.exists(tmp_path / "3" / "data_iterator" / "process_0-of-1")
  fresh = SyntheticIterator(layout, 8, 16, seed=3)
  ckpt.restore(3, abstract_of(small_state(mesh)), data_iterator=fresh)
  got = fresh.get_next()
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name])
  assert ckpt.restore_config(3) == {"seed": 3}
  ckpt.close()


def test_tf_data_iterator_resumes_exactly(tmp_path, mesh):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from clu.data.dataset_iterator import TfDatasetIterator  # pylint: disable=g-import-not-at-top

  def make():
    ds = tf.data.Dataset.range(1000).shuffle(100, seed=1).map(lambda x: {"x": x * 2}).batch(4).prefetch(2)
    return TfDatasetIterator(ds, checkpoint=True)

  iterator = make()
  for _ in range(5):
    iterator.get_next()
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(5, small_state(mesh), data_iterator=iterator)
  ckpt.wait_until_finished()
  expected = [iterator.get_next()["x"] for _ in range(3)]
  fresh = make()
  ckpt.restore(5, abstract_of(small_state(mesh)), data_iterator=fresh)
  np.testing.assert_array_equal([fresh.get_next()["x"] for _ in range(3)], expected)
  ckpt.close()


def test_keep_last_plus_keep_every(tmp_path, mesh):
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1, keep_last=2, keep_every=4, async_save=False)
  state = small_state(mesh)
  for step in range(1, 10):
    assert ckpt.save(step, state)
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [4, 8, 9]
  ckpt.close()


def test_save_interval_and_force(tmp_path, mesh):
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=3, keep_last=10)
  state = small_state(mesh)
  saved = [step for step in range(1, 8) if ckpt.save(step, state)]
  assert ckpt.save(8, state, force=True)
  ckpt.wait_until_finished()
  assert saved == [3, 6] and ckpt.all_steps() == [3, 6, 8]
  ckpt.close()


def test_torn_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, mesh, caplog):
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(2, small_state(mesh, 2.0))
  ckpt.save(4, small_state(mesh, 4.0))
  ckpt.close()
  # Lose the array data of step 4 (a disk that lost files after the commit).
  for root, _, files in os.walk(tmp_path / "4" / "state"):
    for name in files:
      if "ocdbt" in root or name == "manifest.ocdbt":
        os.remove(os.path.join(root, name))
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  with caplog.at_level(logging.WARNING):
    state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert step == 2
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(small_state(mesh, 2.0)["params"]["w"]))
  assert "Checkpoint 4" in caplog.text and "unreadable" in caplog.text and "moved aside" in caplog.text
  assert ckpt.all_steps() == [2]
  assert any(name.startswith("4.unreadable-") for name in os.listdir(tmp_path))
  assert ckpt.save(4, small_state(mesh, 5.0))  # the step can be written again
  ckpt.close()


def test_interrupted_save_is_ignored_and_removed(tmp_path, mesh, caplog):
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(2, small_state(mesh, 2.0))
  ckpt.close()
  partial = tmp_path / "4.orbax-checkpoint-tmp"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "half_written").write_bytes(b"\0" * 10)
  with caplog.at_level(logging.WARNING):
    ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  assert "unfinished checkpoint" in caplog.text
  state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert step == 2 and int(state["step"]) == 7
  deadline = time.time() + 30  # Orbax removes temporary directories in a background thread
  while partial.exists() and time.time() < deadline:
    time.sleep(0.1)
  assert not partial.exists()
  ckpt.close()


def test_no_checkpoint_restores_nothing(tmp_path, mesh):
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  assert ckpt.restore_latest(abstract_of(small_state(mesh))) == (None, None, None)
  ckpt.close()


def test_restore_with_another_process_count_names_the_fix(tmp_path, mesh):
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(1, small_state(mesh), data_iterator=SyntheticIterator(layout, 8, 16))
  ckpt.wait_until_finished()
  os.rename(tmp_path / "1" / "data_iterator" / "process_0-of-1", tmp_path / "1" / "data_iterator" / "process_0-of-2")
  with pytest.raises(checkpointing.IteratorMismatchError, match="saved by 2 process.*restore_data_iterator=False"):
    ckpt.restore(1, abstract_of(small_state(mesh)), data_iterator=SyntheticIterator(layout, 8, 16))
  ckpt.close()


@pytest.mark.slow
def test_train_state_from_fsdp4_tensor2_restores_onto_one_device(tmp_path):
  """Train on 8 devices sharded fsdp=4 x tensor=2, evaluate on 1 (resharding on restore)."""
  config = support.get_config()
  layout = VocabLayout.from_config(config.vocab)
  model_fn = loop.default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  big = partitioning.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 4, "tensor": 2}))
  state = state_lib.create_train_state(model_fn, tx, big, model_def, seed=0, rules=partitioning.LOGICAL_AXIS_RULES)
  specs = [x.sharding.spec for x in jax.tree.leaves(state.params)]
  assert any("fsdp" in str(s) for s in specs) and any("tensor" in str(s) for s in specs)
  ckpt = checkpointing.TrainCheckpointManager(tmp_path / "checkpoints", every_steps=1)
  ckpt.save(1, state)
  ckpt.wait_until_finished()
  checkpointing.export_params(state.params, tmp_path / "params")

  one = partitioning.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}),
                               jax.devices()[:1])
  target = state_lib.abstract_train_state(model_fn, tx, one, model_def, rules=partitioning.LOGICAL_AXIS_RULES)
  restored, step, _ = ckpt.restore_latest(target)
  assert step == 1
  expected = support.params_to_numpy(state)
  for leaf, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    assert leaf.sharding.device_set == {jax.devices()[0]}
    np.testing.assert_array_equal(np.asarray(leaf), want)
  # Params alone, for evaluation: from the export and straight from the training checkpoint.
  for source in (tmp_path / "params", tmp_path / "checkpoints" / "1"):
    params = checkpointing.load_params(source, target.params)
    for leaf, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected.params)):
      assert leaf.sharding.device_set == {jax.devices()[0]}
      np.testing.assert_array_equal(np.asarray(leaf), want)
  ckpt.close()
  # The restored params run the model on the single device.
  model = model_def.merge(params, jax.random.key(0), {})
  from gato_jax import features  # pylint: disable=g-import-not-at-top
  batch = features.random_batch(np.random.default_rng(0), 2, config.data.sequence_length, layout,
                                num_patch_positions=config.model.num_patch_positions,
                                max_obs_positions=config.model.max_obs_positions)
  logits = model({k: jnp.asarray(v) for k, v in batch.items()})
  assert logits.shape == (2, config.data.sequence_length, layout.vocab_size)
  assert np.isfinite(np.asarray(logits)).all()


def test_relative_directory_saves_and_restores(tmp_path, mesh, monkeypatch):
  """`--workdir demo_output` is relative: tensorstore refuses relative paths, so they are resolved."""
  monkeypatch.chdir(tmp_path)
  ckpt = checkpointing.TrainCheckpointManager("run/checkpoints", every_steps=1, async_save=False)
  state = small_state(mesh, scale=2.0)
  ckpt.save(3, state, force=True)
  ckpt.wait_until_finished()
  restored = ckpt.restore(3, abstract_of(state))
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.asarray(state["params"]["w"]))
  assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
  ckpt.close()


def test_lost_iterator_files_are_named_as_lost_not_as_a_process_count_change(tmp_path, mesh):
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  ckpt = checkpointing.TrainCheckpointManager(tmp_path, every_steps=1)
  ckpt.save(1, small_state(mesh), data_iterator=SyntheticIterator(layout, 8, 16))
  ckpt.wait_until_finished()
  os.remove(tmp_path / "1" / "data_iterator" / "process_0-of-1")
  with pytest.raises(FileNotFoundError, match=r"no data iterator state for process_0-of-1: the directory "
                                              r"holds no iterator file \(lost or deleted\)") as e:
    ckpt.restore(1, abstract_of(small_state(mesh)), data_iterator=SyntheticIterator(layout, 8, 16))
  assert "number of processes" not in str(e.value)
  ckpt.close()
