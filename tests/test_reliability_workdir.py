"""Issue #25, item 1 and the one-line refusals of item 6: one gato-train per workdir (a held lock
refuses a second run naming the holder, a killed holder's lock is taken over, bucket workdirs get a
heartbeat record), and bad workdirs / user modules end in one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gato_jax import workdir_lock
import test_training_support as support

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": support.REPO}
HOLD = ("import sys, time; from gato_jax import workdir_lock; workdir_lock.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)")


def _holder(workdir):
  """Another process holding `workdir`'s lock (as a running gato-train does)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], env=ENV, cwd=support.REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_held_workdir_refuses_a_second_run_naming_the_holder(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirBusy, match=rf"in use by another gato-train \(host \S+, pid {holder.pid}, "
                                                        r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"):
      workdir_lock.acquire(str(tmp_path))
  finally:
    holder.kill()
    holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
  holder = _holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid  # its record is still there
  lock = workdir_lock.acquire(str(tmp_path))
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  lock.release()


def test_each_process_of_a_job_locks_its_own_file(tmp_path):
  first = workdir_lock.acquire(str(tmp_path), process_index=0)
  second = workdir_lock.acquire(str(tmp_path), process_index=1)  # another process of the same job
  assert sorted(os.listdir(tmp_path)) == [".lock", ".lock.process_1"]
  first.release()
  second.release()


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  (tmp_path / "run").write_text("x")
  with pytest.raises(workdir_lock.WorkdirError, match="is a file, not a directory"):
    workdir_lock.acquire(str(tmp_path / "run"))


def test_a_refused_config_leaves_no_lock_behind(tmp_path):
  lock = workdir_lock.LocalLock(str(tmp_path / "new")).acquire()
  lock.discard()
  assert not (tmp_path / "new").exists()


def test_the_bucket_lock_record_refuses_while_fresh_and_is_taken_over_when_stale(tmp_path):
  """ObjectLock on a local path (epath treats gs:// the same way): advisory, heartbeat-based."""
  first = workdir_lock.ObjectLock(str(tmp_path), settle_s=0.0, heartbeat_s=0.05).acquire()
  beat = json.loads((tmp_path / "lock.json").read_text())["heartbeat"]
  deadline = time.monotonic() + 10
  while json.loads((tmp_path / "lock.json").read_text())["heartbeat"] == beat and time.monotonic() < deadline:
    time.sleep(0.05)
  assert json.loads((tmp_path / "lock.json").read_text())["heartbeat"] > beat  # refreshed
  with pytest.raises(workdir_lock.WorkdirBusy, match=rf"pid {os.getpid()}"):
    workdir_lock.ObjectLock(str(tmp_path), settle_s=0.0).acquire()
  first._stop.set()  # pylint: disable=protected-access  # its holder dies: no more heartbeats
  first._thread.join()  # pylint: disable=protected-access
  second = workdir_lock.ObjectLock(str(tmp_path), settle_s=0.0, stale_s=0.01)
  time.sleep(0.05)
  second.acquire()
  assert json.loads((tmp_path / "lock.json").read_text())["token"] == second._record["token"]  # pylint: disable=protected-access
  second.release()
  assert not (tmp_path / "lock.json").exists()


def test_a_reader_never_sees_a_half_written_local_lock_record(tmp_path):
  """A reader that met a truncated record would find no holder and take a live run's lock over."""
  holder = workdir_lock.ObjectLock(str(tmp_path), settle_s=0.0, heartbeat_s=0.0005).acquire()
  try:
    records = [(tmp_path / "lock.json").read_text() for _ in range(3000)]
  finally:
    holder.release()
  assert all(json.loads(text)["token"] == holder._record["token"] for text in records)  # pylint: disable=protected-access
  assert not list(tmp_path.glob("*.partial"))


def test_the_bucket_lock_loser_of_a_simultaneous_start_stops(tmp_path, monkeypatch):
  loser = workdir_lock.ObjectLock(str(tmp_path), settle_s=0.01)
  winner = workdir_lock.ObjectLock(str(tmp_path), settle_s=0.0)
  real_sleep = time.sleep
  # Both found no record; the winner writes its record while the loser waits to read its own back.
  monkeypatch.setattr(workdir_lock.time, "sleep", lambda s: (winner._write(), real_sleep(s)))  # pylint: disable=protected-access
  with pytest.raises(workdir_lock.WorkdirBusy):
    loser.acquire()


def _cli(module, *args, timeout=600):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV,
                        cwd=support.REPO, timeout=timeout)


def _one_line(result, program="gato-train"):
  """The last line of stderr, after asserting it is the only line of ours and no traceback came."""
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines and lines[-1].startswith(f"{program}: "), result.stderr[-3000:]
  assert sum(line.startswith(f"{program}: ") for line in lines) == 1, result.stderr[-3000:]
  return lines[-1]


@pytest.mark.slow
def test_a_second_gato_train_on_a_workdir_in_use_exits_2_at_once(tmp_path):
  holder = _holder(tmp_path / "run")
  try:
    started = time.monotonic()
    result = _cli("gato_jax.train", "--config=tests/test_training_support.py", f"--workdir={tmp_path / 'run'}")
    took = time.monotonic() - started
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result)
  assert f"pid {holder.pid}" in line and "in use by another gato-train" in line
  assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "checkpoints").exists()
  assert took < 60, f"took {took:.0f}s"  # only imports: no model, no data


@pytest.mark.slow
def test_gato_eval_is_allowed_beside_a_training_run(tmp_path):
  holder = _holder(tmp_path / "run")
  try:
    result = _cli("gato_jax.evaluate", "--config=tests/test_training_support.py", f"--workdir={tmp_path / 'run'}")
  finally:
    holder.kill()
    holder.wait()
  # It gets as far as its own checks (here: the test config's synthetic data cannot be evaluated).
  assert result.returncode == 1 and "in use" not in result.stderr, result.stderr[-2000:]
  assert _one_line(result, "gato-eval") and not (tmp_path / "run" / ".lock.process_0").exists()


@pytest.mark.slow
def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "run").write_text("x")
  result = _cli("gato_jax.train", "--config=tests/test_training_support.py", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2 and "is a file, not a directory" in _one_line(result)


@pytest.mark.slow
@pytest.mark.parametrize("module, program", [("gato_jax.train", "gato-train"), ("gato_jax.evaluate", "gato-eval")])
def test_a_module_import_that_raises_is_one_line(tmp_path, module, program):
  (tmp_path / "broken_tasks.py").write_text("x = 1\nraise RuntimeError('broken registration')\n")
  env = {**ENV, "PYTHONPATH": f"{tmp_path}:{support.REPO}"}
  result = subprocess.run([sys.executable, "-m", module, "--module_import=broken_tasks",
                           "--config=tests/test_training_support.py", f"--workdir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, cwd=support.REPO, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  line = _one_line(result, program)
  assert "--module_import=broken_tasks: importing it raised RuntimeError: broken registration" in line
  assert "broken_tasks.py:2" in line
