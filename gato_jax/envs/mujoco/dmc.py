"""dm_control suite tasks behind the gymnasium calls ControlTask uses (reset(seed), step, render).

dm_control draws each episode's initial state from `task.random`; reset(seed=...) replaces that
generator with one seeded by the episode's seed, so an episode is a function of its seed. Episodes end
at the suite's time limit (truncated, never terminated: these tasks have no failure state).

Rendering: in a process that has loaded TensorFlow (a TFDS build does), MuJoCo's EGL rendering
segfaults, and even importing dm_control with EGL aborts the process at exit. So dm_control is
imported here with rendering disabled, and `render` hands the physics state to a child interpreter
(`python -m gato_jax.envs.mujoco.dmc DOMAIN TASK`: it imports no TensorFlow) that owns its own copy
of the task and renders that state.
"""

import os
import pickle
import subprocess
import sys
import weakref

import numpy as np


def _suite(backend: str):
  """dm_control.suite, imported with MUJOCO_GL=`backend` (read once, at dm_control's import)."""
  before = os.environ.get("MUJOCO_GL")
  os.environ["MUJOCO_GL"] = backend
  try:
    from dm_control import suite  # optional simulator
  finally:
    if before is None:
      del os.environ["MUJOCO_GL"]
    else:
      os.environ["MUJOCO_GL"] = before
  return suite


def _serve(domain: str, task: str) -> None:
  """The child: renders pickled (state, geom positions, height, width, camera) requests from stdin to stdout."""
  replies = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
  suite = _suite(os.environ.get("MUJOCO_GL") or "egl")
  physics = suite.load(domain, task).physics
  while True:
    try:
      request = pickle.load(sys.stdin.buffer)
    except EOFError:
      return
    if request is None:
      return
    state, geom_pos, height, width, camera_id = request
    with physics.reset_context():
      physics.model.geom_pos[:] = geom_pos  # per-episode layout (reacher's target is a geom's position)
      physics.set_state(state)
    pickle.dump(np.ascontiguousarray(physics.render(height, width, camera_id=camera_id)), replies)
    replies.flush()


def _stop_child(proc: subprocess.Popen):
  """Asks the render child to exit (None, then EOF) and kills it if it does not within 10 s."""
  if proc.poll() is None:
    try:
      pickle.dump(None, proc.stdin)
      proc.stdin.close()
      proc.wait(timeout=10)
    except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
      proc.kill()
      proc.wait()


class _ChildRenderer:
  """Renders physics states of (domain, task) in a child `python -m gato_jax.envs.mujoco.dmc` (a fresh
  interpreter: multiprocessing's spawn would import the parent's __main__, TensorFlow included)."""

  def __init__(self, domain: str, task: str):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    self._proc = subprocess.Popen([sys.executable, "-m", "gato_jax.envs.mujoco.dmc", domain, task],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    # An env dropped without close() (a builder or test that forgets) must not leave its child behind.
    self._finalizer = weakref.finalize(self, _stop_child, self._proc)

  def render(self, state, geom_pos, height: int, width: int, camera_id: int) -> np.ndarray:
    try:
      pickle.dump((state, geom_pos, height, width, camera_id), self._proc.stdin)
      self._proc.stdin.flush()
      return pickle.load(self._proc.stdout)
    except (EOFError, BrokenPipeError) as e:
      raise RuntimeError(f"the dm_control renderer process exited (code {self._proc.poll()}); its "
                         "messages are on stderr above") from e

  def close(self):
    self._finalizer()


class DMCEnv:
  """suite.load(domain, task) with reset(seed=) -> (observation dict, {}), step(a) -> 5-tuple, render()."""

  def __init__(self, domain: str, task: str, render_size=(240, 320), camera_id: int = 0):
    suite = _suite("disabled")
    self.domain, self.task_name = domain, task
    self.env = suite.load(domain, task)
    self.render_size, self.camera_id = render_size, camera_id
    self.render_mode = "rgb_array"
    self._child = None
    spec = self.env.action_spec()
    self.action_low, self.action_high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)

  @property
  def physics(self):
    return self.env.physics

  @property
  def unwrapped(self):
    return self

  def reset(self, seed: int):
    self.env.task._random = np.random.RandomState(seed)  # pylint: disable=protected-access
    step = self.env.reset()
    return dict(step.observation), {}

  def step(self, action):
    step = self.env.step(np.asarray(action, np.float64))
    return dict(step.observation), float(step.reward or 0.0), False, bool(step.last()), {}

  def render(self, height: int = 0, width: int = 0):
    h, w = (height, width) if height else self.render_size
    if self._child is None:
      self._child = _ChildRenderer(self.domain, self.task_name)
    return self._child.render(self.physics.get_state(), np.array(self.physics.model.geom_pos), h, w,
                              self.camera_id)

  def close(self):
    if self._child is not None:
      self._child.close()
      self._child = None
    self.env.close()


if __name__ == "__main__":
  _serve(sys.argv[1], sys.argv[2])
