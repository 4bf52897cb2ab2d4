"""The local launcher: real multi-process jax.distributed runs, fail-fast, signal forwarding, dry-run."""

import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "launch.local"]

# A stand-in for gato-train that takes the same three flags and behaves as each test asks.
_PEER = textwrap.dedent("""
    import signal, sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
    rank = int(args["process_id"])
    def on_term(signum, frame):
      print(f"rank {rank} got SIGTERM", flush=True)
      sys.exit(0)
    mode = args["mode"]
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore_term" else on_term)
    print(f"rank {rank} ready", flush=True)
    if mode == "fail_rank1" and rank == 1:
      time.sleep(0.5)
      sys.exit(3)
    time.sleep(120)
""")


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("XLA_FLAGS", None)
  return env


def _launch(args, timeout=120, env=None):
  return subprocess.run(LAUNCH + args, cwd=REPO, env=env or _env(), capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture
def peer(tmp_path):
  path = tmp_path / "peer.py"
  path.write_text(_PEER)
  return [sys.executable, str(path)]


def test_dry_run_prints_every_process_with_its_devices_and_flags():
  env = _env()
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/dump"
  result = _launch(["--num_processes=3", "--devices_per_process=2", "--port=23456", "--dry-run", "--",
                    "gato-train", "--config", "experiments/tiny_demo.py", "--workdir", "/tmp/w",
                    "--config.seed=3"], env=env)
  assert result.returncode == 0, result.stderr
  assert "3 processes x 2 CPU devices = 6 devices, coordinator 127.0.0.1:23456" in result.stdout
  lines = [shlex.split(l) for l in result.stdout.splitlines() if not l.startswith("#")]
  assert len(lines) == 3
  for rank, words in enumerate(lines):
    assert words[0] == "env"
    env_words = dict(w.split("=", 1) for w in words[1:5])
    # The user's other XLA flags survive; the device count is the launcher's.
    assert env_words["XLA_FLAGS"] == ("--xla_dump_to=/tmp/dump "
                                      "--xla_force_host_platform_device_count=2")
    assert env_words["JAX_PLATFORMS"] == "cpu"
    assert env_words["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"
    assert words[5:] == ["gato-train", "--config", "experiments/tiny_demo.py", "--workdir", "/tmp/w",
                         "--config.seed=3", "--coordinator_address=127.0.0.1:23456",
                         "--num_processes=3", f"--process_id={rank}"]


@pytest.mark.parametrize("args, message", [
    (["--", "gato-train", "--process_id=0"], "sets --coordinator_address"),
    (["--num_processes=0", "--", "gato-train"], "--num_processes must be at least 1"),
    (["--devices_per_process=0", "--", "gato-train"], "--devices_per_process must be at least 1"),
    ([], "no command to run"),
    (["--", "no-such-program-gato"], "is not on PATH"),
])
def test_bad_arguments_are_refused_with_a_clear_error(args, message):
  result = _launch(args)
  assert result.returncode == 2
  assert message in result.stderr


def test_two_processes_join_and_all_reduce_across_them():
  """A real 2-process jax.distributed job: 2 x 4 CPU devices in one global mesh, gloo collectives."""
  result = _launch(["--num_processes=2", "--devices_per_process=4", "--timeout_s=100", "--",
                    sys.executable, "-m", "launch.selftest"])
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  reports = {}
  # Gloo's C++ logging shares the child's output and may land on the report's line, before or after it.
  for rank, report in re.findall(r"\[proc (\d)\] .*?(\{\"expected\".*?\})", result.stdout):
    reports[int(rank)] = json.loads(report)
  assert sorted(reports) == [0, 1], result.stdout[-3000:]
  for rank, report in reports.items():
    assert report["process_index"] == rank
    assert report["process_count"] == 2
    assert report["local_devices"] == 4
    assert report["global_devices"] == 8
    assert report["psum"] == report["jit_sum"] == report["expected"] == 28
    assert report["ok"]


def test_one_failed_process_stops_the_others_and_sets_the_exit_status(peer):
  start = time.monotonic()
  result = _launch(["--num_processes=2", "--devices_per_process=1", "--grace_period_s=5", "--",
                    *peer, "--mode=fail_rank1"], timeout=60)
  elapsed = time.monotonic() - start
  assert result.returncode == 3, result.stdout + result.stderr
  assert "process 1 exited with status 3: stopping the others" in result.stderr
  assert "[proc 0] rank 0 got SIGTERM" in result.stdout  # it did not exit on its own within 5 s
  assert elapsed < 20  # the surviving peer sleeps 120 s: it was stopped, not waited for


def test_a_survivor_that_exits_on_its_own_gets_no_signal(tmp_path):
  path = tmp_path / "peer.py"
  path.write_text(_PEER.replace('time.sleep(120)', 'time.sleep(1.5 if rank == 0 else 120)\nsys.exit(75)'))
  result = _launch(["--num_processes=2", "--devices_per_process=1", "--grace_period_s=10", "--",
                    sys.executable, str(path), "--mode=fail_rank1"], timeout=60)
  assert result.returncode == 3, result.stdout + result.stderr
  assert "got SIGTERM" not in result.stdout and "SIGKILL" not in result.stderr


def test_a_survivors_75_seen_first_does_not_hide_the_death_that_caused_it(tmp_path):
  """The launcher may reap the survivor's 75 before the killed peer (its teardown takes a moment): the
  job's status is still the killed peer's, as CI once saw it race."""
  path = tmp_path / "peer.py"
  path.write_text(_PEER.replace(
      'time.sleep(120)',
      'import os\nif rank == 0:\n  time.sleep(0.3)\n  sys.exit(75)\n'
      'time.sleep(1.5)\nos.kill(os.getpid(), signal.SIGKILL)'))
  result = _launch(["--num_processes=2", "--devices_per_process=1", "--grace_period_s=10", "--",
                    sys.executable, str(path), "--mode=wait"], timeout=60)
  assert "process 0 exited with status 75: stopping the others" in result.stderr, result.stderr
  assert result.returncode == 137, result.stdout + result.stderr
  assert "process 1 exited with status 137, the cause of process 0's 75" in result.stderr
  assert "got SIGTERM" not in result.stdout


def test_a_peer_that_ignores_sigterm_is_killed_after_the_grace_period(peer):
  start = time.monotonic()
  result = _launch(["--num_processes=2", "--devices_per_process=1", "--grace_period_s=1",
                    "--timeout_s=2", "--", *peer, "--mode=ignore_term"], timeout=60)
  assert result.returncode == 124
  assert "timed out after 2s" in result.stderr
  assert "SIGKILL" in result.stderr
  assert time.monotonic() - start < 20


def test_sigterm_to_the_launcher_reaches_every_process(peer):
  proc = subprocess.Popen(LAUNCH + ["--num_processes=2", "--devices_per_process=1",
                                    "--grace_period_s=5", "--", *peer, "--mode=wait"],
                          cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    ready = set()
    deadline = time.monotonic() + 30
    while len(ready) < 2 and time.monotonic() < deadline:
      line = proc.stdout.readline()
      if line.endswith(" ready\n"):
        ready.add(line)
    assert len(ready) == 2, "the processes never started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM
  assert "got SIGTERM: forwarding it to every process" in err
  assert "[proc 0] rank 0 got SIGTERM" in out
  assert "[proc 1] rank 1 got SIGTERM" in out


def test_local_sh_wrapper_runs_from_any_directory(tmp_path):
  result = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), "--dry-run", "--num_processes=2",
                           "--", "gato-train"], cwd=tmp_path, env={**_env(), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert "--process_id=1" in result.stdout
