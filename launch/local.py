"""Runs N local processes joined by jax.distributed on 127.0.0.1, each with its own fake CPU devices.

  python -m launch.local --num_processes=2 --devices_per_process=4 -- \
      gato-train --config experiments/tiny_demo.py --workdir /tmp/gato_2proc

Every child gets `XLA_FLAGS=--xla_force_host_platform_device_count=K`, `JAX_PLATFORMS=cpu`, gloo CPU
collectives, and the three distributed flags appended to its command (`--coordinator_address`,
`--num_processes`, `--process_id`). Logs stream with a `[proc i]` prefix. SIGINT / SIGTERM go to every
child. When one child fails, the others get `--grace_period_s` to exit on their own (gato-train
exits 75 as soon as a collective with the dead peer fails), then SIGTERM, then SIGKILL after another
grace period; the launcher exits with the status of the child that failed first (a survivor's 75 never
hides the death that caused it, whichever the launcher saw first), so a dead peer never leaves the job
hanging. A survivor waiting in a coordination-service barrier (a checkpoint save) learns of the death
only from the missed heartbeats, so give gato-train a `--heartbeat_timeout_seconds` below the grace
period when the survivors should always exit on their own. Children also get `GATO_STOP_TIMEOUT_S`
(0.7 of the grace period, unless set): a gato-train whose save after SIGTERM cannot finish (a dead
peer) exits by itself (status 75, one line) before the launcher would SIGKILL it.
"""

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

DISTRIBUTED_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_POLL_S = 0.05
# gato-train's status when a peer is lost (gato_jax/peer_watch.py): a consequence, never the cause.
_EXIT_PEER_LOST = 75


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """One child: its rank, full command line and the environment variables the launcher sets."""
  process_id: int
  argv: tuple[str, ...]
  env_overrides: dict[str, str]

  def shell_line(self) -> str:
    """The child as one copy-pasteable shell line (`env K=V ... command`)."""
    env = [f"{k}={v}" for k, v in self.env_overrides.items()]
    return shlex.join(["env", *env, *self.argv])


def free_port(host: str = "127.0.0.1") -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def child_env_overrides(base_env: dict[str, str], devices_per_process: int) -> dict[str, str]:
  """The variables a child needs on top of `base_env`: its fake CPU devices and CPU collectives."""
  # Keep the user's other XLA flags; only the device count is the launcher's to decide.
  xla_flags = [f for f in base_env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT_FLAG)]
  xla_flags.append(f"{_DEVICE_COUNT_FLAG}={devices_per_process}")
  return {
      "XLA_FLAGS": " ".join(xla_flags),
      "JAX_PLATFORMS": "cpu",
      "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
      "PYTHONUNBUFFERED": "1",  # so logs stream as they are written, not when a buffer fills
  }


def build_process_specs(command: list[str], num_processes: int, devices_per_process: int,
                        coordinator: str, base_env: dict[str, str]) -> list[ProcessSpec]:
  """The N children of a local job; validates the arguments with errors that say what to change."""
  if num_processes < 1:
    raise ValueError(f"--num_processes must be at least 1, got {num_processes}")
  if devices_per_process < 1:
    raise ValueError(f"--devices_per_process must be at least 1, got {devices_per_process}")
  if not command:
    raise ValueError("no command to run: put it after `--`, e.g. "
                     "`python -m launch.local --num_processes=2 -- gato-train --config ...`")
  clashes = [a for a in command if a.split("=", 1)[0] in DISTRIBUTED_FLAGS]
  if clashes:
    raise ValueError(f"the launcher sets {', '.join(DISTRIBUTED_FLAGS)} itself; remove {clashes} "
                     "from the command")
  env = child_env_overrides(base_env, devices_per_process)
  return [
      ProcessSpec(
          process_id=i,
          argv=(*command, f"--coordinator_address={coordinator}", f"--num_processes={num_processes}",
                f"--process_id={i}"),
          env_overrides=env)
      for i in range(num_processes)
  ]


def _exit_status(returncode: int) -> int:
  """A shell-style status: a child killed by signal N reads as 128 + N."""
  return 128 - returncode if returncode < 0 else returncode


class LocalJob:
  """Starts the children, prefixes and streams their output, forwards signals, fails fast."""

  def __init__(self, specs: list[ProcessSpec], grace_period_s: float, timeout_s: float = 0.0,
               out=None, log=None):
    self._specs = specs
    self._grace_period_s = grace_period_s
    self._timeout_s = timeout_s
    self._out = out or sys.stdout
    self._log = log or sys.stderr
    self._write_lock = threading.RLock()  # re-entrant: a signal handler may say something mid-write
    self._procs: list[subprocess.Popen] = []
    self._pumps: list[threading.Thread] = []
    self._signal_received: int | None = None

  def _say(self, message: str):
    with self._write_lock:
      self._log.write(f"[launch] {message}\n")
      self._log.flush()

  def _pump(self, process_id: int, stream):
    prefix = f"[proc {process_id}] "
    for raw in iter(stream.readline, b""):
      line = raw.decode("utf-8", errors="replace").rstrip("\n")
      with self._write_lock:
        self._out.write(prefix + line + "\n")
        self._out.flush()
    stream.close()

  def _signal_children(self, signum: int):
    for proc in self._procs:
      if proc.poll() is None:
        try:
          # Each child leads its own process group, so whatever it spawned gets the signal too.
          os.killpg(proc.pid, signum)
        except ProcessLookupError:
          pass

  def _on_signal(self, signum, frame):
    del frame
    if self._signal_received is not None:
      self._say(f"second {signal.Signals(signum).name}: killing every process now")
      self._signal_children(signal.SIGKILL)
      return
    self._signal_received = signum
    self._say(f"got {signal.Signals(signum).name}: forwarding it to every process")
    self._signal_children(signum)

  def _stop_all(self, deadline: float):
    """Waits for the children until `deadline`, then SIGKILLs whatever is left."""
    while any(p.poll() is None for p in self._procs) and time.monotonic() < deadline:
      time.sleep(_POLL_S)
    if any(p.poll() is None for p in self._procs):
      self._say(f"processes still running after {self._grace_period_s:g}s: SIGKILL")
      self._signal_children(signal.SIGKILL)
    for proc in self._procs:
      proc.wait()

  def _stop_after_failure(self) -> list:
    """A peer died: the others' next collective fails and gato-train exits at once (status 75). A
    SIGTERM first would start jax's coordinated preemption save, which waits for every peer, the dead
    one included, so it comes only to those still running after the grace period. Returns each
    child's status from before the launcher signalled anyone (None: it was still running)."""
    deadline = time.monotonic() + self._grace_period_s
    while any(p.poll() is None for p in self._procs) and time.monotonic() < deadline:
      time.sleep(_POLL_S)
    on_their_own = [p.poll() for p in self._procs]
    if any(c is None for c in on_their_own):
      self._signal_children(signal.SIGTERM)
      self._stop_all(time.monotonic() + self._grace_period_s)
    for proc in self._procs:
      proc.wait()
    return on_their_own

  def _root_cause_status(self, first_seen: int, code: int, on_their_own: list) -> int:
    """The job's status. A survivor that noticed a death exits 75 and may be reaped before the dead
    peer is (a killed process takes a moment to tear down), so a child that failed on its own in any
    other way is the cause, and its status is the job's."""
    if code != _EXIT_PEER_LOST:
      return _exit_status(code)
    causes = [(i, c) for i, c in enumerate(on_their_own) if c not in (None, 0, _EXIT_PEER_LOST)]
    if not causes:
      return _exit_status(code)
    process_id, cause = causes[0]
    self._say(f"process {process_id} exited with status {_exit_status(cause)}, the cause of process "
              f"{first_seen}'s {_EXIT_PEER_LOST}: the job's status is {_exit_status(cause)}")
    return _exit_status(cause)

  def _start(self):
    base_env = dict(os.environ)
    # gato-train gives up on a save after SIGTERM this long after it (gato_jax/stop_signals.py).
    base_env.setdefault("GATO_STOP_TIMEOUT_S", f"{0.7 * self._grace_period_s:g}")
    for spec in self._specs:
      if self._signal_received is not None:
        break  # interrupted while starting: the rest never start
      proc = subprocess.Popen(
          spec.argv, env={**base_env, **spec.env_overrides}, stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
      self._procs.append(proc)
      pump = threading.Thread(target=self._pump, args=(spec.process_id, proc.stdout), daemon=True)
      pump.start()
      self._pumps.append(pump)

  def run(self) -> int:
    """Runs the job to the end; returns the launcher's exit status."""
    previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      self._start()
      status = self._supervise()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
      for pump in self._pumps:
        pump.join(timeout=5)
    return status

  def _supervise(self) -> int:
    started = time.monotonic()
    while True:
      # Poll before looking for a signal: a child that exits 0 on a forwarded SIGTERM must not read
      # as a clean finish.
      codes = [p.poll() for p in self._procs]
      if self._signal_received is not None:
        self._stop_all(time.monotonic() + self._grace_period_s)
        return 128 + self._signal_received
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        process_id, code = failed[0]
        self._say(f"process {process_id} exited with status {_exit_status(code)}: stopping the others "
                  f"(they get {self._grace_period_s:g}s to notice and exit on their own, then SIGTERM)")
        on_their_own = self._stop_after_failure()
        return self._root_cause_status(process_id, code, on_their_own)
      if all(c == 0 for c in codes):
        return 0
      if self._timeout_s and time.monotonic() - started > self._timeout_s:
        self._say(f"timed out after {self._timeout_s:g}s: stopping every process")
        self._signal_children(signal.SIGTERM)
        self._stop_all(time.monotonic() + self._grace_period_s)
        return 124
      time.sleep(_POLL_S)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  if "--" in argv:
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1:]
  else:
    own, command = argv, []
  parser = argparse.ArgumentParser(
      prog="python -m launch.local",
      description="Run N local processes joined by jax.distributed, each with K fake CPU devices.",
      epilog="Example: python -m launch.local --num_processes=2 --devices_per_process=4 -- "
             "gato-train --config experiments/tiny_demo.py --workdir /tmp/gato_2proc")
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--port", type=int, default=0, help="coordinator port; 0 picks a free one")
  parser.add_argument("--grace_period_s", type=float, default=10.0,
                      help="how long the others get to exit after a failure or a signal; keep it above "
                           "gato-train's --heartbeat_timeout_seconds so a survivor waiting in a "
                           "checkpoint barrier can notice the death and exit on its own")
  parser.add_argument("--timeout_s", type=float, default=0.0, help="stop the job after this; 0 = never")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print each process's command and environment, run nothing")
  return parser.parse_args(own), command


def main(argv: list[str] | None = None) -> int:
  args, command = parse_args(sys.argv[1:] if argv is None else argv)
  coordinator = f"127.0.0.1:{args.port or free_port()}"
  try:
    specs = build_process_specs(command, args.num_processes, args.devices_per_process, coordinator,
                                dict(os.environ))
  except ValueError as e:
    print(f"launch.local: {e}", file=sys.stderr)
    return 2
  total = args.num_processes * args.devices_per_process
  header = (f"{args.num_processes} processes x {args.devices_per_process} CPU devices = {total} "
            f"devices, coordinator {coordinator}")
  if args.dry_run:
    print(f"# {header}")
    for spec in specs:
      print(f"# process {spec.process_id}")
      print(spec.shell_line())
    return 0
  if shutil.which(command[0]) is None:
    print(f"launch.local: {command[0]!r} is not on PATH (for gato-train: `pip install -e .` in this "
          "environment, or run `python -m gato_jax.train`)", file=sys.stderr)
    return 2
  print(f"[launch] {header}", file=sys.stderr, flush=True)
  return LocalJob(specs, args.grace_period_s, args.timeout_s).run()


if __name__ == "__main__":
  sys.exit(main())
