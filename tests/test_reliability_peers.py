"""Issue #14, item 6: a dead peer, with and without the launcher. The survivor exits promptly with a
clear message and status 75 (no ~77 s wait in jax.distributed's shutdown, no abort), and under
launch/local a survivor gets SIGTERM and is gone within the grace period, not SIGKILLed."""

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


def test_a_dead_peer_under_the_launcher_ends_the_job_without_sigkill(tmp_path, cache_env):
  env = {**cache_env, "PYTHONPATH": support.REPO}
  import os  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, "-m", "launch.local", "--num_processes=2", "--devices_per_process=4",
         "--grace_period_s=30", "--", sys.executable, "-m", "gato_jax.train",
         f"--config={support.__file__}", f"--workdir={tmp_path / 'run'}", *STEPS,
         # The kill lands while process 0 may be in step 4's checkpoint barrier, which only the
         # coordination service's heartbeat ends: it must be shorter than the grace period.
         "--heartbeat_timeout_seconds=10"]
  log = tmp_path / "job.log"
  job = subprocess.Popen(cmd, cwd=support.REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
                         stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
  try:
    _wait_for(lambda: "[proc 0] step 4/24" in log.read_text() or job.poll() is not None, 900, "training")
    pids = subprocess.run(["pgrep", "-f", "--", f"--workdir={tmp_path / 'run'}.*--process_id=1"], capture_output=True,
                          text=True).stdout.split()
    assert pids, log.read_text()[-3000:]
    os.kill(int(pids[0]), signal.SIGKILL)
    killed = time.time()
    code = job.wait(timeout=120)
    waited = time.time() - killed
  finally:
    if job.poll() is None:
      os.killpg(job.pid, signal.SIGKILL)
  text = log.read_text()
  assert code == 137, text[-3000:]  # the killed child's status
  assert "still running after" not in text, text[-3000:]  # nobody needed SIGKILL
  assert waited < 30, f"the job took {waited:.0f}s to end"
