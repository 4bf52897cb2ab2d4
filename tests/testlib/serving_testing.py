"""gato-serve for tests: a tiny checkpoint, the server started as `python -m gato_jax.serving` on a free
loopback port (this checkout's code), waited for with a deadline, and stopped by its pid."""

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
  def __init__(self, proc: subprocess.Popen, url: str, log: str):
    self.proc, self.url, self.log = proc, url, log

  def output(self) -> str:
    with open(self.log) as f:
      return f.read()

  def stop(self, sig=signal.SIGTERM, timeout_s: float = 60) -> int:
    if self.proc.poll() is None:
      self.proc.send_signal(sig)
    return self.proc.wait(timeout_s)


def start(checkpoint: str, directory: str, *flags: str, port: int = 0, timeout_s: float = 180) -> Server:
  """Starts gato-serve on 127.0.0.1 and returns once it accepts requests (or raises with its log)."""
  port_file = os.path.join(directory, f"port_{time.monotonic_ns()}")
  log = port_file + ".log"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "gato_jax.serving", f"--checkpoint={checkpoint}",
                             f"--port={port}", f"--port_file={port_file}", *flags],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
  deadline = time.monotonic() + timeout_s
  while not os.path.exists(port_file):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      proc.wait(30)
      with open(log) as f:
        raise RuntimeError(f"gato-serve did not start:\n{f.read()[-3000:]}")
    time.sleep(0.2)
  with open(port_file) as f:
    return Server(proc, f"http://127.0.0.1:{int(f.read())}", log)
