"""Issue #25, item 2 and the smaller items: storage errors (permission, not found, I/O, quota) are
retried and never cost a checkpoint; only data that reads back wrong is moved aside; a workdir that
lost its checkpoints/ is refused; bad init_from / data_dir leave the workdir as it was."""

import errno
import os
import shutil
import threading
import time

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gato_jax import checkpointing, partitioning
from gato_jax.training import init_from, loop
from test_checkpointing import abstract_of, small_state
import test_training_support as support


@pytest.fixture(name="mesh")
def fixture_mesh():
  return partitioning.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))


def _manager(directory, **kwargs):
  kwargs.setdefault("retry_backoff_s", 0.01)
  return checkpointing.TrainCheckpointManager(directory, every_steps=1, **kwargs)


def _two_checkpoints(directory, mesh):
  ckpt = _manager(directory)
  ckpt.save(2, small_state(mesh, 2.0))
  ckpt.save(4, small_state(mesh, 4.0))
  ckpt.close()


# What the storage says when it refuses, in the forms it reaches us: an OSError from epath / os, and
# TensorStore's status text (a ValueError) for the array data.
STORAGE_ERRORS = {
    "permission": lambda p: PermissionError(errno.EACCES, "Permission denied", p),
    "permission_tensorstore": lambda p: ValueError(f'PERMISSION_DENIED: Error opening file "{p}/state": '
                                                   "[OS error: Permission denied]"),
    "io": lambda p: OSError(errno.EIO, "Input/output error", p),
    "quota": lambda p: OSError(errno.EDQUOT, "Disk quota exceeded", p),
    "quota_tensorstore": lambda p: ValueError("RESOURCE_EXHAUSTED: quota exceeded for the bucket"),
}


@pytest.mark.parametrize("kind", sorted(STORAGE_ERRORS))
def test_a_storage_error_on_the_latest_checkpoint_is_retried_and_costs_nothing(tmp_path, mesh, monkeypatch,
                                                                               kind):
  _two_checkpoints(tmp_path, mesh)
  original, calls = ocp.CheckpointManager.restore, []

  def refusing_twice(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) <= 2:
      raise STORAGE_ERRORS[kind](str(tmp_path / str(step)))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", refusing_twice)
  ckpt = _manager(tmp_path)
  state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert step == 4 and calls[:3] == [4, 4, 4]  # the same step again: no fallback to step 2
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(small_state(mesh, 4.0)["params"]["w"]))
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]  # nothing renamed
  ckpt.close()


@pytest.mark.parametrize("kind", sorted(STORAGE_ERRORS))
def test_a_storage_error_that_persists_stops_the_run_and_moves_nothing(tmp_path, mesh, monkeypatch, kind):
  _two_checkpoints(tmp_path, mesh)
  monkeypatch.setattr(ocp.CheckpointManager, "restore",
                      lambda self, step, *a, **k: (_ for _ in ()).throw(STORAGE_ERRORS[kind](str(tmp_path))))
  ckpt = _manager(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match=r"step 4 .* after 4 attempts .*nothing was moved"):
    ckpt.restore_latest(abstract_of(small_state(mesh)), on_unreadable="restart")  # not even with restart
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def test_chmod_000_on_the_latest_step_for_3_seconds_renames_nothing(tmp_path, mesh, monkeypatch):
  """The trial's case. Root reads through chmod 000, so there the refusal is simulated for 3 s."""
  _two_checkpoints(tmp_path, mesh)
  step_dir, until = tmp_path / "4", time.monotonic() + 3.0
  if os.geteuid() != 0:
    os.chmod(step_dir, 0)
    timer = threading.Timer(3.0, os.chmod, args=(step_dir, 0o755))
    timer.start()
  else:
    original = ocp.CheckpointManager.restore

    def refused_for_3s(self, step, *args, **kwargs):
      if step == 4 and time.monotonic() < until:
        raise ValueError(f'PERMISSION_DENIED: Error opening file "{step_dir}": [OS error: Permission denied]')
      return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", refused_for_3s)
  ckpt = _manager(tmp_path, retry_backoff_s=0.5)  # 0.5 + 1 + 2 s of retries outlast the 3 s
  state, step, _ = ckpt.restore_latest(abstract_of(small_state(mesh)))
  assert step == 4 and time.monotonic() >= until
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(small_state(mesh, 4.0)["params"]["w"]))
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def test_an_unlistable_checkpoint_directory_is_one_error_after_retries(tmp_path, monkeypatch):
  (tmp_path / "checkpoints").mkdir()

  def refused(directory):
    raise PermissionError(errno.EACCES, "Permission denied", str(directory))

  monkeypatch.setattr(checkpointing, "_temporary_dirs", refused)  # what chmod 000 does to a non-root run
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"opening the checkpoint directory .* failed 4 times \(PermissionError.*nothing was"):
    _manager(tmp_path / "checkpoints")


def test_not_found_is_corrupt_only_when_the_step_directory_is_there(tmp_path):
  step_dir = tmp_path / "4"
  step_dir.mkdir()
  (step_dir / "state").mkdir()
  lost_file = ValueError('NOT_FOUND: Metadata at "step/.zarray" in OCDBT database does not exist')
  assert not checkpointing.is_transient(lost_file, step_dir)  # the data is gone: corrupt
  shutil.rmtree(step_dir)
  assert checkpointing.is_transient(lost_file, step_dir)  # the directory is gone: storage


def test_a_failed_collective_is_never_the_storage(tmp_path):
  # What CPU gloo raised when a peer reached Orbax's first collective 30 s late: retrying it alone (the
  # peer is not retrying) desynchronised the job, and it was reported as "fix the storage".
  gloo = RuntimeError("UNKNOWN: Gloo context initialization failed: DEADLINE_EXCEEDED: GetKeyValue() timed "
                      "out with key: cpu:gloo/0,2048/1 [type.googleapis.com/tensorflow.CoordinationServiceError='']")
  assert checkpointing.is_collective_error(gloo)
  assert not checkpointing.is_transient(gloo, tmp_path / "missing")
  assert checkpointing.is_transient(RuntimeError("DEADLINE_EXCEEDED: gcs read"), tmp_path)


def test_one_failed_read_is_no_proof_of_corruption(tmp_path, mesh, monkeypatch):
  _two_checkpoints(tmp_path, mesh)
  original, calls = ocp.CheckpointManager.restore, []

  def fails_once(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) == 1:
      raise ValueError("DATA_LOSS: checksum mismatch")  # not a storage error: a suspect, read again
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", fails_once)
  ckpt = _manager(tmp_path)
  assert ckpt.restore_latest(abstract_of(small_state(mesh)))[1] == 4
  assert sorted(os.listdir(tmp_path)) == ["2", "4"]
  ckpt.close()


def _config(**overrides):
  config = support.get_config()
  config.num_train_steps, config.log_every_steps = 2, 1
  for key, value in overrides.items():
    config[key] = value
  return config


def test_a_run_that_lost_its_checkpoints_directory_refuses_unless_told_to_restart(tmp_path):
  config = _config()
  loop.train(config, str(tmp_path))
  shutil.rmtree(tmp_path / "checkpoints")  # an unmounted disk
  with pytest.raises(checkpointing.CheckpointError, match="checkpoints/ directory is missing.*on_unreadable=restart"):
    loop.train(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
  config.checkpoint.on_unreadable = "restart"
  assert loop.train(config, str(tmp_path), stop_after_steps=1).step == 1  # from step 0


@pytest.mark.parametrize("spec, message", [("{tmp}/missing", "does not exist"),
                                           ("{tmp}/source@7", "no committed checkpoint of step 7")])
def test_a_bad_init_from_leaves_nothing_in_the_new_workdir(tmp_path, spec, message):
  (tmp_path / "source" / "checkpoints").mkdir(parents=True)
  config = _config(init_from=spec.format(tmp=tmp_path))
  with pytest.raises(init_from.InitFromError, match=message):
    loop.train(config, str(tmp_path / "new"))
  assert not os.path.exists(tmp_path / "new") or os.listdir(tmp_path / "new") == []


def test_a_data_dir_that_is_a_file_is_called_a_file(tmp_path):
  (tmp_path / "data").write_text("not a directory")
  config = _config()
  config.data.mixture, config.data.data_dir = "cartpole:1", str(tmp_path / "data")
  with pytest.raises(loop.ConfigError, match="is a file, not a directory"):
    loop.train(config, str(tmp_path / "run"))


def test_a_failed_first_save_does_not_promise_a_resume(tmp_path, mesh, monkeypatch):
  ckpt = _manager(tmp_path)
  monkeypatch.setattr(ocp.CheckpointManager, "save",
                      lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
  with pytest.raises(checkpointing.CheckpointError, match="no earlier checkpoint: rerun and training starts at step 0"):
    ckpt.save(2, small_state(mesh, 2.0))
  monkeypatch.undo()
  ckpt.close()
