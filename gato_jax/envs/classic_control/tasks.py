"""CartPole, Pendulum, MountainCar and LunarLander as control tasks: the state vector, the env's action.

Observations are the env's state vector as one continuous field `state` (mu-law companded: velocities
are unbounded). Episodes end when the env ends them (gymnasium's time limits). Filters: CartPole keeps
episodes at or above the env's reward threshold (475 of 500), LunarLander those that land (return >=
200, the env's 'solved' threshold); Pendulum and MountainCar keep every episode.
"""

import functools

import gymnasium as gym
import numpy as np

from gato_jax.envs.classic_control import controllers
from gato_jax.envs.control import ControlTask
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec


def _make_env(env_id: str, seed: int):
  del seed  # episodes are seeded by reset(seed=...)
  return gym.make(env_id)


def _state(raw_obs, env):
  del env
  return {"state": np.asarray(raw_obs, np.float32)}


def _min_return(threshold: float):
  return lambda episode: episode["episode_return"] >= threshold


def _task(name, env_id, state_size, action, expert, max_steps, min_return=None, description=""):
  spec = TaskSpec(name, {"state": FieldSpec("continuous", (state_size,))}, action)
  return ControlTask(
      name=name, spec=spec, make_env=functools.partial(_make_env, env_id), observation_fn=_state,
      make_expert=expert, keep_episode=None if min_return is None else _min_return(min_return),
      max_steps=max_steps, description=description)


CARTPOLE = _task("cartpole", "CartPole-v1", 4, ActionSpec("discrete", (), (2,)),
                 controllers.cartpole_expert, 500, min_return=475.0,
                 description="CartPole-v1, LQR bang-bang expert (return 500).")
PENDULUM = _task("pendulum", "Pendulum-v1", 3,
                 ActionSpec("continuous", (1,), (), (-2.0,), (2.0,)),
                 controllers.pendulum_expert, 200,
                 description="Pendulum-v1, energy-shaping swing-up + LQR expert (return about -140).")
MOUNTAINCAR = _task("mountaincar", "MountainCar-v0", 2, ActionSpec("discrete", (), (3,)),
                    controllers.mountaincar_expert, 200,
                    description="MountainCar-v0, planned bang-bang expert (return about -106).")
LUNARLANDER = _task("lunarlander", "LunarLander-v3", 8, ActionSpec("discrete", (), (4,)),
                    controllers.lunarlander_expert, 1000, min_return=200.0,
                    description="LunarLander-v3, gymnasium's heuristic lander; landed episodes only.")

# (task, default number of train episodes for gato-data)
TASKS = [(CARTPOLE, 300), (PENDULUM, 300), (MOUNTAINCAR, 300), (LUNARLANDER, 200)]
