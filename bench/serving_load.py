"""Actions per second through gato-serve with N concurrent sessions (bench/acting.py's server part).

A preset's freshly initialised params are exported, `python -m gato_jax.serving` serves them on a free
loopback port, and N client threads (requests) each step their own session of the Meta-World-shaped
task (Meta-World-shaped: 39 observation values, 44 tokens a step; and CartPole-shaped: 4 values, 6
tokens a step): warm-up steps first, then `steps` timed steps each, all sessions at once.
actions/s = N * steps / the wall time of the timed part. The server compiles every shape of both
tasks at start (--warm_tasks), so no compile falls in a timed part.
"""

import concurrent.futures
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from gato_jax import checkpointing
from gato_jax.serving.client import Client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(model, directory: str) -> str:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, "params")
  checkpointing.export_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)), path)
  return path


def start_server(params: str, preset: str, directory: str, max_sessions: int, tasks=None, timeout_s: float = 1200):
  port_file = os.path.join(directory, "port")
  log = open(os.path.join(directory, "serve.log"), "w")  # pylint: disable=consider-using-with
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen([sys.executable, "-m", "gato_jax.serving", f"--checkpoint={params}",
                           f"--config={os.path.join(ROOT, 'experiments', preset + '.py')}",
                           "--config.model.dropout_rate=0.0", "--port=0", f"--port_file={port_file}",
                           f"--max_sessions={max_sessions}", "--greedy",
                           f"--warm_tasks={','.join(tasks or TASKS)}"],
                          stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
  deadline = time.monotonic() + timeout_s
  while not os.path.exists(port_file):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise RuntimeError(f"gato-serve did not start; see {log.name}")
    time.sleep(0.5)
  with open(port_file) as f:
    return proc, f"http://127.0.0.1:{int(f.read())}"


TASKS = {"metaworld_reach": 39, "cartpole": 4}  # task -> observation values


def _observation(rng, size: int):
  return {"state": rng.uniform(-0.5, 1.0, size).round(4).tolist()}


def demonstration(task: str, rng, steps: int = 64) -> dict:
  """A prompt episode of the task's shapes (random values: the bench measures speed, not skill)."""
  size = TASKS[task]
  action = (rng.uniform(-1, 1, (steps, 4)).astype(np.float32) if task == "metaworld_reach"
            else rng.integers(0, 2, steps).astype(np.int64))
  return {"steps": {"observation": {"state": rng.uniform(-0.5, 1.0, (steps, size)).astype(np.float32)},
                    "action": action, "reward": np.zeros(steps, np.float32)}}


def throughput(url: str, task: str, sessions: int, warmup: int, steps: int) -> dict:
  """N sessions of `task`, each prompted with a demonstration as gato-eval does, stepping at once;
  every session's steps are timed between two barriers."""
  client = Client(url, timeout_s=600, pool_size=max(sessions, 1))
  ids = [client.create(task, prompt=demonstration(task, np.random.default_rng(i)), seed=i) for i in range(sessions)]
  size = TASKS[task]
  barrier = threading.Barrier(sessions + 1)
  latencies = []

  def run(i):
    try:
      rng = np.random.default_rng(i)
      for _ in range(warmup):
        client.act(ids[i], _observation(rng, size))
      barrier.wait()
      for _ in range(steps):
        start = time.perf_counter()
        client.act(ids[i], _observation(rng, size))
        latencies.append(1e3 * (time.perf_counter() - start))
      barrier.wait()
    except BaseException:
      barrier.abort()  # the other sessions and the clock stop waiting for this one (BrokenBarrierError)
      raise

  with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
    futures = [pool.submit(run, i) for i in range(sessions)]
    try:
      barrier.wait()
      start = time.perf_counter()
      barrier.wait()
      seconds = time.perf_counter() - start
    finally:
      for f in futures:  # the first session's own error, if one failed, rather than the broken barrier
        if f.exception() is not None and not isinstance(f.exception(), threading.BrokenBarrierError):
          raise f.exception()
  for i in ids:
    client.close(i)
  return {"task": task, "sessions": sessions, "steps": steps, "seconds": seconds, "actions_per_s": sessions * steps / seconds,
          "ms_p50": float(np.median(latencies)), "ms_p90": float(np.percentile(latencies, 90))}


def bench_server(params: str, preset: str, session_counts, warmup: int, steps: int, tasks=None) -> list[dict]:
  """actions/s per task and session count (warm-up steps pass each session's first window roll) of
  the exported `params`: the caller drops its own copy of the model first, so that a big preset's
  server (its pool of caches, its compiles) has the machine's memory."""
  with tempfile.TemporaryDirectory() as directory:
    proc, url = start_server(params, preset, directory, max(session_counts), tasks)
    try:
      return [throughput(url, task, n, warmup, steps) for task in (tasks or TASKS) for n in session_counts]
    finally:
      proc.terminate()
      proc.wait(120)
