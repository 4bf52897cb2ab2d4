"""Issue #14, items 1-3: unreadable checkpoints (transient vs corrupt, refusal, opt-in restart, a fresh
iterator before any fallback), one definition of "committed" for gato-train and gato-eval, the limit
on consecutive skipped steps, and a full disk during a save."""

import errno
import logging
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gato_jax import checkpointing, partitioning
from gato_jax.evaluation import evaluator as evaluator_lib
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import loop
from test_checkpointing import abstract_of, small_state
from test_training import _nonfinite_run
import test_training_support as support


@pytest.fixture(name="mesh")
def fixture_mesh():
  return partitioning.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))


def _manager(directory, **kwargs):
  return checkpointing.TrainCheckpointManager(directory, every_steps=1, retry_backoff_s=0.01, **kwargs)


def _two_checkpoints(tmp_path, mesh):
  ckpt = _manager(tmp_path)
  ckpt.save(2, small_state(mesh, 2.0))
  ckpt.save(4, small_state(mesh, 4.0))
  ckpt.close()


def _corrupt(step_dir):
  """Loses a committed checkpoint's array data (a disk that lost files after the commit)."""
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      if "ocdbt" in root or name == "manifest.ocdbt":
        os.remove(os.path.join(root, name))


def test_a_transient_read_error_is_retried_and_renames_nothing(tmp_path, mesh, monkeypatch):
  _two_checkpoints(tmp_path, mesh)
  original, calls = ocp.CheckpointManager.restore, []

  def flaky(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) <= 2:
      raise OSError(errno.EIO, "Input/output error", str(tmp_path / str(step)))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", flaky)
  ckpt = _manager(tmp_path)
  state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert step == 4 and calls[:3] == [4, 4, 4]
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(small_state(mesh, 4.0)["params"]["w"]))
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def test_storage_that_stays_away_stops_the_run_and_moves_nothing(tmp_path, mesh, monkeypatch):
  _two_checkpoints(tmp_path, mesh)

  def unavailable(self, step, *args, **kwargs):
    raise ValueError("UNAVAILABLE: the bucket did not answer")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", unavailable)
  ckpt = _manager(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match=r"step 4 .* after 4 attempts .*nothing was moved"):
    ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def test_a_vanished_checkpoint_directory_is_not_a_fresh_start(tmp_path, mesh):
  _two_checkpoints(tmp_path / "ckpt", mesh)
  ckpt = _manager(tmp_path / "ckpt")
  os.rename(tmp_path / "ckpt", tmp_path / "unmounted")  # the disk goes away after start-up
  with pytest.raises(checkpointing.CheckpointError, match="has disappeared .*not starting over"):
    ckpt.restore_latest(abstract_of(small_state(mesh)))
  os.rename(tmp_path / "unmounted", tmp_path / "ckpt")
  assert ckpt.restore_latest(abstract_of(small_state(mesh)))[1] == 4
  ckpt.close()


def test_every_checkpoint_corrupt_is_refused_naming_the_steps(tmp_path, mesh):
  _two_checkpoints(tmp_path, mesh)
  _corrupt(tmp_path / "2")
  _corrupt(tmp_path / "4")
  ckpt = _manager(tmp_path)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"every checkpoint .* unreadable: step 4 \(.*\); step 2 \(.*nothing was moved.*restart"):
    ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)), on_unreadable="restart")
  assert state is None and step is None
  assert sorted(n.split(".")[0] for n in os.listdir(tmp_path)) == ["2", "4"]
  assert all(".unreadable-" in n for n in os.listdir(tmp_path)) and ckpt.all_steps() == []
  ckpt.close()


def test_on_unreadable_fail_refuses_even_with_an_older_readable_one(tmp_path, mesh):
  _two_checkpoints(tmp_path, mesh)
  _corrupt(tmp_path / "4")
  ckpt = _manager(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match="step 4 .* unreadable .*nothing was moved"):
    ckpt.restore_latest(abstract_of(small_state(mesh)), on_unreadable="fail")
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def _synthetic_config(**overrides):
  config = support.get_config()
  config.num_train_steps = 4
  config.log_every_steps = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def test_a_restart_over_unreadable_checkpoints_reads_the_batches_of_a_fresh_run(tmp_path):
  config = _synthetic_config()
  fresh = loop.train(config, str(tmp_path / "fresh"), stop_after_steps=1).last_metrics["loss"]
  loop.train(config, str(tmp_path / "run"))  # checkpoints at steps 2 and 4; the iterator is at batch 4
  for step in ("2", "4"):
    _corrupt(tmp_path / "run" / "checkpoints" / step)
  with pytest.raises(checkpointing.CheckpointError, match="every checkpoint"):
    loop.train(config, str(tmp_path / "run"), stop_after_steps=1)
  config.checkpoint.on_unreadable = "restart"
  restarted = loop.train(config, str(tmp_path / "run"), stop_after_steps=1)
  assert restarted.step == 1 and restarted.last_metrics["loss"] == fresh


def test_train_and_eval_agree_on_the_committed_steps(tmp_path):
  config = _synthetic_config(num_train_steps=6, checkpoint_every_steps=2)
  loop.train(config, str(tmp_path))
  directory = tmp_path / "checkpoints"
  os.remove(directory / "6" / "_CHECKPOINT_METADATA")  # Orbax's rename, not this file, is the commit
  shutil.copytree(directory / "4", directory / "8.orbax-checkpoint-tmp-99")  # a save in flight
  evaluated = [c.step for c in evaluator_lib.committed_checkpoints(str(tmp_path))]
  assert "8.orbax-checkpoint-tmp-99" in evaluator_lib.log_skipped(str(tmp_path))
  ckpt = checkpointing.TrainCheckpointManager(directory, every_steps=2)  # (removes the unfinished save)
  assert ckpt.all_steps() == evaluated == checkpointing.committed_steps(directory) == [4, 6]
  ckpt.close()


def test_eval_names_the_steps_it_skips(tmp_path, caplog):
  (tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1").mkdir(parents=True)
  (tmp_path / "checkpoints" / "2.unreadable-17").mkdir()
  with caplog.at_level(logging.WARNING):
    skipped = evaluator_lib.log_skipped(str(tmp_path))
  assert set(skipped) == {"3.orbax-checkpoint-tmp-1", "2.unreadable-17"}
  assert "Not evaluating checkpoints/3.orbax-checkpoint-tmp-1: a save in progress" in caplog.text
  assert "checkpoints/2.unreadable-17: moved aside by gato-train as unreadable" in caplog.text


def test_skip_stops_after_max_consecutive_skips(tmp_path, monkeypatch):
  from gato_jax.training import failures  # pylint: disable=g-import-not-at-top
  calls = []
  real = failures.NonFiniteGuard.__call__

  def always_nonfinite(self, pending):  # every step diverged: finite = 0
    if pending is not None:
      calls.append(pending[0])
      pending = (pending[0], dict(pending[1], finite=np.float32(0)), pending[2])
    return real(self, pending)

  monkeypatch.setattr(failures.NonFiniteGuard, "__call__", always_nonfinite)
  config = _synthetic_config(num_train_steps=8, on_nonfinite="skip", max_consecutive_skips=3)
  with pytest.raises(loop.NonFiniteError, match=r"step 3, 3 steps in a row .*diverged") as e:
    loop.train(config, str(tmp_path))
  assert e.value.consecutive == 3
  assert not os.path.exists(tmp_path / "params")


def test_disk_full_during_a_save_keeps_the_previous_checkpoint_and_says_so(tmp_path, mesh, monkeypatch):
  from etils import epath  # pylint: disable=g-import-not-at-top
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  from gato_jax.training.synthetic import SyntheticIterator  # pylint: disable=g-import-not-at-top
  iterator = SyntheticIterator(layout, 8, 16)
  ckpt = _manager(tmp_path)
  ckpt.save(2, small_state(mesh, 2.0), data_iterator=iterator)
  ckpt.wait_until_finished()
  real = epath.Path.write_bytes

  def full(self, data):
    if "process_0-of-1" in str(self):
      raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return real(self, data)

  monkeypatch.setattr(type(epath.Path(tmp_path)), "write_bytes", full)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"step 4 .*no space left on device; the previous checkpoint \(step 2\) is intact"):
    ckpt.save(4, small_state(mesh, 4.0), data_iterator=iterator)
    ckpt.wait_until_finished()
  monkeypatch.undo()
  ckpt.close()
  again = _manager(tmp_path)
  state, step, _ = again.restore_latest(abstract_of(small_state(mesh)))
  assert step == 2
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(small_state(mesh, 2.0)["params"]["w"]))
  again.close()
