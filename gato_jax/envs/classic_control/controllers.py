"""Hand-written experts for gymnasium's classic control: LQR, energy shaping, a planned bang-bang.

Each expert is derived from the environment's own equations of motion (constants read from the env),
so it stays correct if a user changes, say, the pole length.
"""

import functools

import numpy as np
import scipy.linalg


def lqr_gain(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
  """K of the continuous-time LQR u = -K x."""
  p = scipy.linalg.solve_continuous_are(a, b, q, r)
  return np.linalg.solve(r, b.T @ p)


@functools.lru_cache(maxsize=16)
def _cartpole_gain(g: float, mc: float, mp: float, half: float) -> np.ndarray:
  mt = mc + mp
  den = half * (4.0 / 3.0 - mp / mt)  # gymnasium's theta_acc denominator
  a = np.zeros((4, 4))
  a[0, 1] = a[2, 3] = 1.0
  a[3, 2] = g / den
  a[1, 2] = -mp * half * a[3, 2] / mt
  b = np.zeros((4, 1))
  b[3, 0] = -1.0 / (mt * den)
  b[1, 0] = 1.0 / mt - mp * half * b[3, 0] / mt
  # The angle weighs most: the episode ends at 12 degrees, the cart has 2.4 m of track.
  return lqr_gain(a, b, np.diag([1.0, 1.0, 10.0, 1.0]), np.eye(1))


def cartpole_expert(env):
  """Bang-bang on the sign of the LQR force of the cart-pole linearised upright (theta = 0)."""
  u = env.unwrapped
  k = _cartpole_gain(u.gravity, u.masscart, u.masspole, u.length)

  def policy(observation, raw_obs, env):
    del observation, env
    return int(-(k @ np.asarray(raw_obs, np.float64))[0] > 0)

  return policy


@functools.lru_cache(maxsize=16)
def _pendulum_gain(g: float, m: float, length: float) -> np.ndarray:
  a = np.array([[0.0, 1.0], [3.0 * g / (2.0 * length), 0.0]])
  b = np.array([[0.0], [3.0 / (m * length**2)]])
  return lqr_gain(a, b, np.diag([1.0, 0.1]), np.array([[0.05]]))


def pendulum_expert(env, pump_gain: float = 2.0, capture_cos: float = 0.85):
  """Energy-shaping swing-up, then LQR once the pendulum is within ~30 degrees of upright."""
  u = env.unwrapped
  g, m, length, max_torque = u.g, u.m, u.l, u.max_torque
  inertia = m * length**2 / 3.0  # a uniform rod about its end, as gymnasium integrates it
  e_top = m * g * length / 2.0
  k = _pendulum_gain(g, m, length)

  def policy(observation, raw_obs, env):
    del observation, env
    cos, sin, speed = np.asarray(raw_obs, np.float64)
    if cos > capture_cos:
      torque = -(k @ np.array([np.arctan2(sin, cos), speed]))[0]
    else:
      energy = 0.5 * inertia * speed**2 + m * g * length / 2.0 * cos
      torque = pump_gain * (e_top - energy) * speed
    return np.clip([torque], -max_torque, max_torque).astype(np.float32)

  return policy


def _mountaincar_steps_to_goal(env, position: float, velocity: float, back_steps: np.ndarray,
                               horizon: int = 200) -> np.ndarray:
  """Steps to the goal for each candidate: push left for `back_steps[k]` steps, then along the velocity
  (the env's own dynamics, every candidate at once); horizon + 1 where the goal is not reached."""
  u = env.unwrapped
  p = np.full(back_steps.shape, position, np.float64)
  v = np.full(back_steps.shape, velocity, np.float64)
  arrival = np.full(back_steps.shape, horizon + 1)
  for t in range(horizon):
    action = np.where(t < back_steps, 0, np.where(v >= 0, 2, 0))
    v = np.clip(v + (action - 1) * u.force + np.cos(3 * p) * (-u.gravity), -u.max_speed, u.max_speed)
    p = np.clip(p + v, u.min_position, u.max_position)
    v = np.where((p == u.min_position) & (v < 0), 0.0, v)
    arrived = (p >= u.goal_position) & (v >= u.goal_velocity) & (arrival > horizon)
    arrival[arrived] = t + 1
  return arrival


def mountaincar_expert(env, max_back_steps: int = 60):
  """Planned bang-bang: back up for the number of steps that reaches the flag soonest, then push
  along the velocity (the energy-pumping policy). Planned once per episode from the reset state."""
  position, velocity = (float(x) for x in env.unwrapped.state)
  candidates = np.arange(max_back_steps)
  back = int(candidates[np.argmin(_mountaincar_steps_to_goal(env, position, velocity, candidates))])
  t = 0

  def policy(observation, raw_obs, env):
    nonlocal t
    del observation, env
    t += 1
    return 0 if t <= back else (2 if raw_obs[1] >= 0 else 0)

  return policy


def lunarlander_expert(env):
  """gymnasium's own LunarLander heuristic (PID on angle and hover height)."""
  from gymnasium.envs.box2d.lunar_lander import heuristic  # optional (Box2D)

  def policy(observation, raw_obs, env):
    del observation
    return int(heuristic(env.unwrapped, raw_obs))

  return policy
