"""Issue #14, item 6: a dead peer, with and without the launcher. The survivor exits promptly with a
clear message and status 75 (no ~77 s wait in jax.distributed's shutdown, no abort), and under
launch/local a survivor gets SIGTERM and is gone within the grace period, not SIGKILLed."""

import os
import signal
import subprocess
import sys
import time

import pytest

import test_training_support as support
from test_training_multiprocess import STEPS, _launch_two, _wait_for, fixture_cache_env  # pylint: disable=unused-import

pytestmark = pytest.mark.slow


def test_a_dead_peer_without_the_launcher_exits_75_promptly(tmp_path, cache_env):
  procs = _launch_two(tmp_path, cache_env, "--heartbeat_timeout_seconds=10")
  log0 = tmp_path / "p0.log"
  try:
    _wait_for(lambda: "step 4/24" in log0.read_text() or procs[0].poll() is not None, 900, "training")
    assert procs[1].poll() is None, "process 1 ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = procs[0].wait(timeout=120)
    waited = time.time() - killed
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  text = log0.read_text()
  assert code == 75, text[-3000:]
  assert waited < 30, f"process 0 took {waited:.0f}s to exit"
  assert "gato-train: process 0 of 2: " in text and "another process died or lost contact" in text, text[-3000:]


def _kill_rank1_under_the_launcher(tmp_path, cache_env, launcher_flags, train_flags, after_line):
  """Runs gato-train under launch/local, SIGKILLs process 1 once `after_line` is logged, and times the
  job's end: (exit code, seconds after the kill, log text)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **cache_env, "PYTHONPATH": support.REPO}
  cmd = [sys.executable, "-m", "launch.local", "--num_processes=2", "--devices_per_process=4",
         *launcher_flags, "--", sys.executable, "-m", "gato_jax.train", f"--config={support.__file__}",
         f"--workdir={tmp_path / 'run'}", *STEPS, *train_flags]
  log = tmp_path / "job.log"
  job = subprocess.Popen(cmd, cwd=support.REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
  try:
    _wait_for(lambda: after_line in log.read_text() or job.poll() is not None, 900, "training")
    pids = subprocess.run(["pgrep", "-f", "--", f"--workdir={tmp_path / 'run'}.*--process_id=1"],
                          capture_output=True, text=True).stdout.split()
    assert pids, log.read_text()[-3000:]
    os.kill(int(pids[0]), signal.SIGKILL)
    killed = time.time()
    code = job.wait(timeout=120)
    waited = time.time() - killed
  finally:
    if job.poll() is None:
      os.killpg(job.pid, signal.SIGKILL)
  return code, waited, log.read_text()


def test_a_dead_peer_under_the_launcher_ends_the_job_without_sigkill(tmp_path, cache_env):
  # The kill lands while process 0 may be in step 4's checkpoint barrier, which only the coordination
  # service's heartbeat ends: it must be shorter than the grace period.
  code, waited, text = _kill_rank1_under_the_launcher(
      tmp_path, cache_env, ["--grace_period_s=30"], ["--heartbeat_timeout_seconds=10"], "[proc 0] step 4/24")
  assert code == 137, text[-3000:]  # the killed child's status, even when the survivor's 75 is seen first
  assert "still running after" not in text, text[-3000:]  # nobody needed SIGKILL
  assert waited < 30, f"the job took {waited:.0f}s to end"


# Issue #25, item 3: at the default settings too, whichever process dies, every survivor ends with
# exit 75 and one last line, and a survivor honours the launcher's SIGTERM.
LONG = ["--config.num_train_steps=100000", "--config.checkpoint_every_steps=50", "--config.log_every_steps=8"]


def _last_line(path):
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  return lines[-1] if lines else ""


def _kill_after_step_16(procs, log0, kill, survivor: int):
  """Once process 0 logs step 16, runs `kill()` and times `survivor`'s exit: (exit code, seconds).
  Every process still running is killed on the way out."""
  try:
    _wait_for(lambda: "step 16/" in log0.read_text() or procs[0].poll() is not None, 900, "training")
    assert procs[0].poll() is None, log0.read_text()[-3000:]
    kill()
    killed = time.time()
    code = procs[survivor].wait(timeout=120)
    return code, time.time() - killed
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()


def test_a_dead_coordinator_ends_the_survivor_with_75_and_one_line(tmp_path, cache_env):
  procs = _launch_two(tmp_path, cache_env, *LONG, "--heartbeat_timeout_seconds=10")
  log0, log1 = tmp_path / "p0.log", tmp_path / "p1.log"
  # The coordinator dies: the survivor used to abort (134).
  code, waited = _kill_after_step_16(procs, log0, lambda: procs[0].send_signal(signal.SIGKILL), survivor=1)
  text = log1.read_text()
  assert code == 75, text[-3000:]
  assert waited < 10 + 15, f"process 1 took {waited:.0f}s to exit"
  print(f"survivor exited 75 {waited:.1f}s after the coordinator died")
  assert _last_line(log1).startswith("gato-train: process 1 of 2: "), text[-3000:]
  assert "Traceback" not in text and "step None" not in text, text[-3000:]


def test_a_survivor_honours_sigterm_when_its_peer_is_gone(tmp_path, cache_env):
  """Default heartbeat (100 s): the survivor, told to stop, must not wait for the dead peer's save."""
  env = {**cache_env, "GATO_STOP_TIMEOUT_S": "5"}
  procs = _launch_two(tmp_path, env, *LONG)
  log0 = tmp_path / "p0.log"

  def kill_peer_then_stop_survivor():
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGTERM)

  code, waited = _kill_after_step_16(procs, log0, kill_peer_then_stop_survivor, survivor=0)
  text = log0.read_text()
  assert code == 75, text[-3000:]
  assert waited < 5 + 10, f"process 0 took {waited:.0f}s to exit"
  print(f"survivor exited 75 {waited:.1f}s after its peer died and it got SIGTERM")
  assert _last_line(log0).startswith("gato-train: "), text[-3000:]


def test_a_dead_peer_under_the_launcher_at_default_settings(tmp_path, cache_env):
  """No --heartbeat_timeout_seconds, no --grace_period_s: the launcher's defaults (10 s) and
  gato-train's (100 s) must still end the job without a SIGKILL."""
  code, waited, text = _kill_rank1_under_the_launcher(tmp_path, cache_env, [], LONG, "[proc 0] step 16/")
  assert code == 137, text[-3000:]
  assert "still running after" not in text, text[-3000:]  # the survivor honoured SIGTERM (or left first)
  assert "[proc 0] gato-train: process 0 of 2: " in text or "[proc 0] gato-train: SIGTERM received" in text, \
      text[-3000:]
  assert waited < 10 + 7 + 8, f"the job took {waited:.0f}s to end"
  print(f"the job ended {waited:.1f}s after the peer died")
