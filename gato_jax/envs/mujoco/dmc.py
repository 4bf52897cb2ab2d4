"""dm_control suite tasks behind the gymnasium calls ControlTask uses (reset(seed), step, render).

dm_control draws each episode's initial state from `task.random`; reset(seed=...) replaces that
generator with one seeded by the episode's seed, so an episode is a function of its seed. Episodes end
at the suite's time limit (truncated, never terminated: these tasks have no failure state).

Rendering: in a process that has loaded TensorFlow (a TFDS build does), MuJoCo's EGL rendering
segfaults, and even importing dm_control with EGL aborts the process at exit. So dm_control is
imported here with rendering disabled, and `render` hands the physics state to a child process
(spawned: it inherits no TensorFlow) that owns its own copy of the task and renders that state.
"""

import multiprocessing
import os

import numpy as np


def _suite(backend: str):
  """dm_control.suite, imported with MUJOCO_GL=`backend` (read once, at dm_control's import)."""
  before = os.environ.get("MUJOCO_GL")
  os.environ["MUJOCO_GL"] = backend
  try:
    from dm_control import suite
  finally:
    if before is None:
      del os.environ["MUJOCO_GL"]
    else:
      os.environ["MUJOCO_GL"] = before
  return suite


def _render_worker(domain: str, task: str, conn) -> None:
  suite = _suite(os.environ.get("MUJOCO_GL", "egl"))
  physics = suite.load(domain, task).physics
  while True:
    request = conn.recv()
    if request is None:
      return
    state, height, width, camera_id = request
    with physics.reset_context():
      physics.set_state(state)
    conn.send(np.ascontiguousarray(physics.render(height, width, camera_id=camera_id)))


class _ChildRenderer:
  """Renders physics states of (domain, task) in a spawned child process."""

  def __init__(self, domain: str, task: str):
    ctx = multiprocessing.get_context("spawn")
    self._conn, child = ctx.Pipe()
    self._proc = ctx.Process(target=_render_worker, args=(domain, task, child), daemon=True)
    self._proc.start()
    child.close()

  def render(self, state, height: int, width: int, camera_id: int) -> np.ndarray:
    self._conn.send((state, height, width, camera_id))
    return self._conn.recv()

  def close(self):
    if self._proc.is_alive():
      self._conn.send(None)
      self._proc.join(timeout=10)


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
    return self._child.render(self.physics.get_state(), h, w, self.camera_id)

  def close(self):
    if self._child is not None:
      self._child.close()
      self._child = None
    self.env.close()
