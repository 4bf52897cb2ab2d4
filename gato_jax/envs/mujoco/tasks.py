"""MuJoCo bodies solved from their state: gymnasium's InvertedPendulum / InvertedDoublePendulum / Reacher
(v5) and dm_control suite cartpole swingup / point_mass easy / reacher easy, with model-derived controllers.

Observations are proprioceptive: the env's own state vector as `state` (gymnasium), or the suite's
observation dict flattened in key order (dm_control), mu-law binned (velocities are unbounded).
The `_pixels` tasks see a 64x64 RGB camera frame instead (the suite's camera 0, rendered headless
with EGL; 16 patches), plus nothing else: the policy has to read the pole, or the target's place,
from pixels. The experts read the simulator's state (qpos / qvel and body positions) through the env.
Every episode is kept; they all run to the time limit (1000 steps; both reachers 50).
"""

import functools
import sys

import gymnasium as gym
import numpy as np

from gato_jax.envs.control import ControlTask
from gato_jax.envs.mujoco import controllers
from gato_jax.envs.mujoco.dmc import DMCEnv
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

PIXELS = 64


class _RenderWithDMControl(gym.Wrapper):
  """render() through dm_control's EGL renderer (gymnasium's own EGL context fails headless here),
  on a copy of the env's model set to the env's current state. Only in a TensorFlow-free process
  (gato-eval renders GIFs in one, evaluation/replay.py): see dmc.py."""

  _physics = None

  def render(self):
    if self._physics is None:
      if "tensorflow" in sys.modules:
        raise RuntimeError("MuJoCo rendering needs a process without TensorFlow (see gato_jax/envs/mujoco/dmc.py)")
      from dm_control import mujoco as dm_mujoco  # optional simulator
      self._physics = dm_mujoco.Physics.from_xml_path(self.unwrapped.fullpath)
    data = self.unwrapped.data
    self._physics.data.qpos[:], self._physics.data.qvel[:] = data.qpos, data.qvel
    self._physics.forward()
    return self._physics.render(240, 320, camera_id=-1)


def _make_gym(env_id: str, seed: int):
  del seed  # episodes are seeded by reset(seed=...)
  return _RenderWithDMControl(gym.make(env_id))


def _make_dmc(domain: str, task: str, seed: int):
  del seed
  return DMCEnv(domain, task)


def _dmc_reset(env, seed: int):
  return env.reset(seed=seed)


def _state(raw_obs, env):
  del env
  return {"state": np.asarray(raw_obs, np.float32)}


def _dmc_state(raw_obs, env):
  del env
  return {"state": np.concatenate([np.ravel(raw_obs[k]) for k in sorted(raw_obs)]).astype(np.float32)}


def _dmc_pixels(raw_obs, env):
  del raw_obs
  return {"image": np.ascontiguousarray(env.render(PIXELS, PIXELS), np.uint8)}


def _as_policy(control):
  def policy(observation, raw_obs, env):
    del observation, raw_obs, env
    return np.asarray(control(), np.float32)
  return policy


def inverted_pendulum_expert(env):
  """LQR on the model linearised upright, one env step (frame_skip physics steps) per action."""
  u = env.unwrapped
  return _as_policy(controllers.lqr_policy(u.model, u.data, u.frame_skip, [1, 10, 1, 1], 0.1, -3.0, 3.0))


def inverted_double_pendulum_expert(env):
  u = env.unwrapped
  return _as_policy(controllers.lqr_policy(u.model, u.data, u.frame_skip, [1, 10, 10, 1, 1, 1], 0.1,
                                           -1.0, 1.0))


def reacher_expert(env, kp: float = 0.3, kd: float = 0.05):
  """Two-link inverse kinematics to the target, PD on the joint angles (gains in ctrl units: the
  motors' gear is 200, so small gains; larger ones pay more control cost than they save distance)."""
  u = env.unwrapped
  m, d = u.model, u.data
  l1, l2 = np.linalg.norm(m.body("body1").pos[:2]), np.linalg.norm(m.body("fingertip").pos[:2])

  def control():
    target = d.body("target").xpos[:2] - d.body("body0").xpos[:2]
    q = d.qpos[:2]
    goal = controllers.two_link_ik(target, l1, l2, q[1])
    return np.clip(kp * controllers.wrap(goal - q) - kd * d.qvel[:2], -1.0, 1.0)

  return _as_policy(control)


def cartpole_swingup_expert(env):
  p = env.physics
  m, d = p.model.ptr, p.data.ptr
  k = controllers.balance_gain(m, 1, [1, 20, 1, 1], 1.0)
  return _as_policy(lambda: np.clip(controllers.cartpole_swingup(m, d, k), -1.0, 1.0))


def point_mass_expert(env):
  """LQR to the target at the origin (the actuators drive tendons: the linearisation maps them)."""
  p = env.physics
  m, d = p.model.ptr, p.data.ptr
  k = controllers.balance_gain(m, 1, [1, 1, 0.1, 0.1], 0.001)
  return _as_policy(lambda: np.clip(-k @ np.concatenate([d.qpos, d.qvel]), -1.0, 1.0))


def dmc_reacher_expert(env, kp: float = 3.0, kd: float = 0.3):
  """Two-link inverse kinematics to the target's centre, PD on the joint angles (reaches it in ~15-25
  steps; 985 of 1000 at the suite's time limit where random control gets 83; 34 of 50 against 1.3)."""
  p = env.physics
  l1, l2 = (float(np.linalg.norm(p.named.model.body_pos[b][:2])) for b in ("hand", "finger"))

  def control():
    target = p.named.data.geom_xpos["target"][:2] - p.named.data.xpos["arm"][:2]
    q = p.data.qpos[:2]
    goal = controllers.two_link_ik(target, l1, l2, q[1])
    return np.clip(kp * controllers.wrap(goal - q) - kd * p.data.qvel[:2], -1.0, 1.0)

  return _as_policy(control)


def _gym_task(name, env_id, state_size, low, high, expert, max_steps, description):
  n = len(low)
  spec = TaskSpec(name, {"state": FieldSpec("continuous", (state_size,))},
                  ActionSpec("continuous", (n,), (), tuple(low), tuple(high)))
  return ControlTask(name=name, spec=spec, make_env=functools.partial(_make_gym, env_id),
                     observation_fn=_state, make_expert=expert, max_steps=max_steps,
                     description=description)


def _dmc_task(name, domain, task, state_size, num_actions, expert, description, pixels=False,
              max_steps=1000):
  observation = ({"image": FieldSpec("image", (PIXELS, PIXELS, 3))} if pixels
                 else {"state": FieldSpec("continuous", (state_size,))})
  spec = TaskSpec(name, observation,
                  ActionSpec("continuous", (num_actions,), (), (-1.0,) * num_actions, (1.0,) * num_actions))
  return ControlTask(name=name, spec=spec, make_env=functools.partial(_make_dmc, domain, task),
                     observation_fn=_dmc_pixels if pixels else _dmc_state, make_expert=expert,
                     max_steps=max_steps, reset_fn=_dmc_reset, description=description, domain="dm_control")


TASKS = [
    (_gym_task("mujoco_inverted_pendulum", "InvertedPendulum-v5", 4, (-3.0,), (3.0,),
               inverted_pendulum_expert, 1000,
               "InvertedPendulum-v5, LQR on the MuJoCo model's linearisation (return 1000)."), 100),
    (_gym_task("mujoco_inverted_double_pendulum", "InvertedDoublePendulum-v5", 9, (-1.0,), (1.0,),
               inverted_double_pendulum_expert, 1000,
               "InvertedDoublePendulum-v5, LQR on the MuJoCo model's linearisation."), 100),
    (_gym_task("mujoco_reacher", "Reacher-v5", 10, (-1.0, -1.0), (1.0, 1.0), reacher_expert, 50,
               "Reacher-v5, two-link inverse kinematics + joint PD."), 1000),
    (_dmc_task("dmc_cartpole_swingup", "cartpole", "swingup", 5, 1, cartpole_swingup_expert,
               "dm_control cartpole swingup, energy-shaping swing-up + LQR, state observation."), 100),
    (_dmc_task("dmc_cartpole_swingup_pixels", "cartpole", "swingup", 0, 1, cartpole_swingup_expert,
               "dm_control cartpole swingup, same expert, 64x64 RGB camera observation.", pixels=True),
     20),  # headless rendering costs 20-80 ms a frame on this CPU
    (_dmc_task("dmc_point_mass_easy", "point_mass", "easy", 4, 2, point_mass_expert,
               "dm_control point_mass easy, LQR to the target."), 100),
    # Reacher's episodes end after 50 steps (1 s of the suite's 20), as gymnasium's Reacher: the expert
    # reaches the target in ~15-25 and then holds. At the suite's 1000 (or 200) steps 90% of every
    # episode is holding still, and a 400-step training learned to hold still (measured: the state
    # twin 0.03 of expert at 200 steps).
    (_dmc_task("dmc_reacher_easy", "reacher", "easy", 6, 2, dmc_reacher_expert,
               "dm_control reacher easy, inverse kinematics + joint PD, state observation (50 steps).",
               max_steps=50), 100),
    (_dmc_task("dmc_reacher_easy_pixels", "reacher", "easy", 0, 2, dmc_reacher_expert,
               "dm_control reacher easy, same expert, 64x64 RGB top-down camera only: the target's "
               "place is in no other observation (50 steps).", pixels=True, max_steps=50), 100),
]
