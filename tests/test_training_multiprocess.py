"""`gato-train` as users run it, in fresh processes: exact resume after SIGKILL, a save on SIGTERM,
two processes x 4 devices joined by jax.distributed matching one process x 8 (a dead peer:
test_reliability_peers.py)."""

import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import test_training_support as support

pytestmark = pytest.mark.slow

STEPS = ["--config.num_train_steps=24", "--config.checkpoint_every_steps=4", "--config.log_every_steps=4"]


@pytest.fixture(scope="module", name="cache_env")
def fixture_cache_env(tmp_path_factory):
  """A persistent compilation cache shared by this module's processes: one compile per program."""
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(autouse=True, name="reap")
def fixture_reap(monkeypatch):
  """Kills whatever gato-train process a failing test leaves behind."""
  started = []
  popen = support.run_train

  def tracked(*args, **kwargs):
    proc = popen(*args, **kwargs)
    if isinstance(proc, subprocess.Popen):
      started.append(proc)
    return proc

  monkeypatch.setattr(support, "run_train", tracked)
  yield
  for proc in started:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.fixture(scope="module", name="reference")
def fixture_reference(tmp_path_factory, cache_env):
  """One uninterrupted process on 8 devices (data=2 x fsdp=2 x tensor=2): the final params."""
  workdir = tmp_path_factory.mktemp("reference")
  result = support.run_train(workdir, *STEPS, env=cache_env)
  assert "step 24/24" in result.stdout
  return support.read_params(workdir / "params"), _losses(result.stdout)


def _losses(log: str) -> dict[int, float]:
  """{step: loss} from the progress lines."""
  out = {}
  for line in log.splitlines():
    if line.startswith("step ") and "| loss " in line:
      out[int(line.split()[1].split("/")[0])] = float(line.split("| loss ")[1].split()[0])
  return out


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.1)
  raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _committed_steps(workdir):
  path = workdir / "checkpoints"
  return sorted(int(p) for p in os.listdir(path) if p.isdigit()) if path.exists() else []


def _assert_identical(a, b):
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_sigkill_after_a_checkpoint_then_restart_resumes_exactly(tmp_path, reference, cache_env):
  log = open(tmp_path / "first.log", "w")
  proc = support.run_train(tmp_path, *STEPS, env=cache_env, stdout=log, stderr=subprocess.STDOUT)
  _wait_for(lambda: _committed_steps(tmp_path) or proc.poll() is not None, 600, "a first checkpoint")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_after = _committed_steps(tmp_path)
  assert killed_after and killed_after[-1] < 24, f"the run finished before the kill: {killed_after}"
  result = support.run_train(tmp_path, *STEPS, env=cache_env)
  assert f"Resumed from step {killed_after[-1]}" in result.stderr
  _assert_identical(support.read_params(tmp_path / "params"), reference[0])


def test_sigterm_saves_a_checkpoint_and_exits_143_then_resumes(tmp_path, reference, cache_env):
  log_path = tmp_path / "first.log"
  proc = support.run_train(tmp_path, *STEPS, env=cache_env, stdout=open(log_path, "w"),
                           stderr=subprocess.STDOUT)
  _wait_for(lambda: "step 4/24" in log_path.read_text() or proc.poll() is not None, 600, "step 4")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 143, log_path.read_text()[-3000:]
  text = log_path.read_text()
  preempted_at = int(text.split("Preempted at step ")[1].split(":")[0])
  assert _committed_steps(tmp_path)[-1] == preempted_at < 24
  result = support.run_train(tmp_path, *STEPS, env=cache_env)
  assert f"Resumed from step {preempted_at}" in result.stderr
  _assert_identical(support.read_params(tmp_path / "params"), reference[0])


def _launch_two(tmp_path, cache_env, *flags, logs=("p0.log", "p1.log")):
  port = support.free_port()
  procs = []
  for i in range(2):
    procs.append(support.run_train(
        tmp_path / "run", *STEPS, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
        f"--process_id={i}", *flags, devices=4, env=cache_env, stdout=open(tmp_path / logs[i], "w"),
        stderr=subprocess.STDOUT))
  return procs


def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path, reference, cache_env):
  # Process 1 builds its data 35 s late (a loaded host): the first collective, Orbax's as the checkpoints
  # open, gave up on it after gloo's 30 s; now the processes meet at the coordination service first.
  env = {**cache_env, "GATO_TEST_LATE_PEER_S": "35",
         "PYTHONPATH": os.pathsep.join([support.REPO, os.path.dirname(__file__)])}
  procs = _launch_two(tmp_path, env, "--module_import=late_peer")
  codes = [p.wait(timeout=900) for p in procs]
  assert codes == [0, 0], [(tmp_path / f"p{i}.log").read_text()[-3000:] for i in range(2)]
  steps = os.listdir(tmp_path / "run" / "checkpoints" / "24" / "data_iterator")
  assert {"process_0-of-2", "process_1-of-2"} <= set(steps)  # each process saved its own input state
  params = support.read_params(tmp_path / "run" / "params")
  reference_params, reference_losses = reference
  assert _losses((tmp_path / "p0.log").read_text()) == reference_losses  # to the 4 printed decimals
  config = support.get_config()
  from gato_jax.training import optimizer  # pylint: disable=g-import-not-at-top
  schedule = optimizer.learning_rate_schedule(config.optimizer, 24)
  support.assert_params_match(params, reference_params, max_update=sum(float(schedule(s)) for s in range(24)),
                              rtol=1e-5, atol=1e-6)


def test_sigterm_to_one_process_saves_the_same_step_on_both(tmp_path, cache_env):
  """jax's preemption sync manager spreads the notice: every process saves the same step, exits 143."""
  procs = _launch_two(tmp_path, cache_env)
  log0 = tmp_path / "p0.log"
  _wait_for(lambda: "step 4/24" in log0.read_text() or procs[0].poll() is not None, 900, "training")
  procs[1].send_signal(signal.SIGTERM)
  codes = [p.wait(timeout=120) for p in procs]
  logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
  assert codes == [143, 143], [log[-2000:] for log in logs]
  steps = {int(log.split("Preempted at step ")[1].split(":")[0]) for log in logs}
  assert len(steps) == 1 and _committed_steps(tmp_path / "run")[-1] == steps.pop()


def test_a_mesh_that_does_not_fit_exits_2_with_shapes_that_do(tmp_path):
  result = support.run_train(tmp_path, "--config.mesh.data=3", check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "gato-train: config.mesh data=3 x fsdp=2 x tensor=2 needs 12 devices but there are 8" in result.stderr
  assert "data=2 x fsdp=2 x tensor=2" in result.stderr
