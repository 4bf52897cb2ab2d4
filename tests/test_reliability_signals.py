"""Issue #25, items 4 and 5: Ctrl-C saves and exits 130 like SIGTERM (143), a second Ctrl-C exits at
once; the decisive line is the last line of stderr (every checkpoint unreadable, a full disk during a
save), with the library tracebacks in the workdir."""

import os
import signal
import subprocess
import time

import pytest

from gato_jax import checkpointing
import test_training_support as support

pytestmark = pytest.mark.slow
LONG = ["--config.num_train_steps=100000", "--config.checkpoint_every_steps=1000", "--config.log_every_steps=5"]


def _start(workdir, *flags):
  log = open(workdir.parent / f"{workdir.name}.err", "w+")
  proc = support.run_train(workdir, *LONG, *flags, stdout=subprocess.PIPE, stderr=log, text=True)
  return proc, log


def _wait_for_step(proc, step: int, timeout_s: float = 300):
  """Reads progress lines until `step` is logged (the loop is then between steps, checkpointing)."""
  deadline = time.monotonic() + timeout_s
  for line in proc.stdout:
    if line.startswith(f"step {step}/"):
      return
    assert time.monotonic() < deadline and proc.poll() is None, "training never reached the step"
  raise AssertionError("gato-train ended before the step")


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
  proc, log = _start(tmp_path / "run")
  try:
    _wait_for_step(proc, 10)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  log.seek(0)
  err = log.read()
  assert code == 130, err[-3000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  steps = checkpointing.committed_steps(tmp_path / "run" / "checkpoints")
  assert steps and steps[-1] >= 10, steps  # saved at the step it stopped, not at a 1000-step interval


def test_a_second_ctrl_c_exits_at_once_without_saving(tmp_path):
  proc, log = _start(tmp_path / "run", "--config.checkpoint.async_save=False")
  try:
    _wait_for_step(proc, 10)
    proc.send_signal(signal.SIGINT)
    # The second only once the first was taken (two pending SIGINTs merge into one); the save it
    # started (synchronous here) takes longer than this poll.
    deadline = time.monotonic() + 30
    while "Received SIGINT" not in open(log.name).read() and time.monotonic() < deadline:
      time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = proc.wait(timeout=120)
    took = time.monotonic() - started
  finally:
    if proc.poll() is None:
      proc.kill()
  log.seek(0)
  err = log.read()
  assert code == 130, err[-3000:]
  assert err.strip().splitlines()[-1] == "gato-train: second SIGINT: exiting now, without saving", err[-3000:]
  assert took < 10, f"took {took:.1f}s"


def test_every_checkpoint_unreadable_is_the_last_line_and_the_tracebacks_go_to_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  support.run_train(workdir, "--config.num_train_steps=4")
  for root, _, files in os.walk(workdir / "checkpoints"):
    for name in files:
      if "ocdbt" in root or name == "manifest.ocdbt":
        os.remove(os.path.join(root, name))
  result = support.run_train(workdir, "--config.num_train_steps=4", check=False)
  assert result.returncode == 4, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith("gato-train: every checkpoint in "), lines[-1]
  assert len(result.stderr.splitlines()) < 40, result.stderr  # was thousands of lines
  details = lines[-1].rsplit("(details: ", 1)[1].rstrip(")")
  assert details.startswith(str(workdir / "logs" / "error-")) and "Traceback" in open(details).read()


def test_a_full_disk_during_a_save_is_the_last_line(tmp_path):
  """A real full disk: a 600 kB tmpfs (root with CAP_SYS_ADMIN only; skipped elsewhere)."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here")
  try:
    result = support.run_train(disk / "run", "--config.num_train_steps=40", "--config.checkpoint.keep_last=100",
                               check=False)
  finally:
    subprocess.run(["umount", str(disk)], check=False)
  assert result.returncode == 4, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 40, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  # Whichever writer meets the full disk first: a checkpoint save, or the metrics / event files.
  assert last.startswith(("gato-train: saving checkpoint step ", "gato-train: writing to ")), result.stderr
  assert "no space left on device" in last
