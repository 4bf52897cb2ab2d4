"""GIFs of evaluation episodes, rendered by replaying their actions in a separate, TensorFlow-free process.

Why a separate process: MuJoCo's headless (EGL) rendering crashes the process (SIGSEGV, nothing to
catch) when TensorFlow and JAX are loaded in it, and gato-eval needs both. The simulators are
deterministic given (env seed, actions), so a child process that imports only the task's own modules
re-runs the episode (make_env, reset(seed), step(actions)) and renders it. The simulators live in
gato_jax.envs, which imports neither TensorFlow nor JAX, and a rendering failure only costs that GIF,
never the evaluation.

Child usage (what `render_gifs` runs): python -m gato_jax.evaluation.replay REQUEST.pkl
"""

import os
import pickle
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from absl import logging
import numpy as np


def request(task, seed: int, actions: Sequence, path: str, max_frames: int = 60, fps: int = 10) -> dict:
  """One GIF to render: the task's simulator functions (pickled by reference), seed and actions."""
  return {"name": task.name, "make_env": task.make_env, "reset_fn": task.reset_fn, "seed": int(seed),
          "actions": [np.asarray(a) if not isinstance(a, (int, np.integer)) else int(a) for a in actions],
          "path": path, "max_frames": int(max_frames), "fps": int(fps)}


class GifJob:
  """A child process rendering GIFs while the evaluation goes on; `wait()` collects the paths."""

  def __init__(self, requests: list[dict]):
    self.requests = requests
    self._tmp = tempfile.TemporaryDirectory()
    self._proc = None
    if not requests:
      return
    path = os.path.join(self._tmp.name, "request.pkl")
    try:
      with open(path, "wb") as f:
        pickle.dump(requests, f)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
      logging.warning("No GIFs: the tasks' make_env / reset functions cannot be pickled (%s); define "
                      "them at module level to get GIFs.", e)
      return
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("SDL_VIDEODRIVER", "dummy")
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    self._log = open(os.path.join(self._tmp.name, "log.txt"), "w+")
    self._proc = subprocess.Popen([sys.executable, "-m", "gato_jax.evaluation.replay", path], env=env,
                                  stdout=self._log, stderr=subprocess.STDOUT)

  def wait(self, timeout_s: float = 600.0) -> dict[str, Optional[str]]:
    """{task: GIF path, or None when it could not be rendered}."""
    if self._proc is not None:
      try:
        rc = self._proc.wait(timeout=timeout_s)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        rc = self._proc.wait()
        logging.warning("GIF rendering took over %.0f s; stopped it.", timeout_s)
      self._log.seek(0)
      log = self._log.read()
      self._log.close()
      if rc != 0 or "no GIF" in log:
        logging.warning("GIF rendering (exit code %d):\n%s", rc, log[-3000:])
      self._proc = None
    self._tmp.cleanup()
    return {r["name"]: r["path"] if os.path.exists(r["path"]) else None for r in self.requests}


def render_gifs(requests: list[dict], timeout_s: float = 600.0) -> dict[str, Optional[str]]:
  """Renders every request in one child process and waits for it."""
  return GifJob(requests).wait(timeout_s)


def replay_frames(make_env, reset_fn, seed: int, actions: Sequence, max_frames: int) -> list[np.ndarray]:
  """Re-runs an episode and renders up to `max_frames` frames evenly spread over it."""
  env = make_env(seed)
  try:
    getattr(env, "unwrapped", env).render_mode = "rgb_array"
    reset_fn(env, seed)
    stride = max(1, -(-(len(actions) + 1) // max(1, max_frames)))
    frames = [_frame(env)]
    for t, action in enumerate(actions, start=1):
      env.step(action)
      if t % stride == 0 or t == len(actions):
        frames.append(_frame(env))
    return frames[:max_frames + 1]
  finally:
    env.close()


def _frame(env) -> np.ndarray:
  frame = env.render()
  if frame is None:
    raise RuntimeError("env.render() returned None: the simulator cannot render rgb_array frames")
  return np.asarray(frame)[..., :3].astype(np.uint8)


def write_gif(frames, path: str, fps: int = 10, max_side: int = 256) -> str:
  """Frames -> an animated GIF (looping), downscaled so the longer side is at most `max_side`."""
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top  # GIF child process only
  factor = max(1, -(-max(frames[0].shape[:2]) // max_side))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  imageio.mimsave(path, [f[::factor, ::factor] for f in frames], duration=1000.0 / fps, loop=0)
  return path


def main(path: str) -> int:
  with open(path, "rb") as f:
    requests = pickle.load(f)
  failures = 0
  for r in requests:
    try:
      frames = replay_frames(r["make_env"], r["reset_fn"], r["seed"], r["actions"], r["max_frames"])
      write_gif(frames, r["path"], r["fps"])
      print(f"{r['name']}: {len(frames)} frames -> {r['path']}", flush=True)
    except Exception as e:  # pylint: disable=broad-except
      failures += 1
      print(f"{r['name']}: no GIF ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
  sys.stdout.flush()
  # Skip interpreter teardown: EGL contexts raise noisy errors from their finalisers at exit.
  os._exit(1 if failures == len(requests) else 0)


if __name__ == "__main__":
  main(sys.argv[1])
