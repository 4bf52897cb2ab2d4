"""Meta-World (v3) tasks driven by the scripted policies that ship in the `metaworld` package.

Environment: `gym.make("Meta-World/goal_observable", env_name=...)`, the MT1 observation (39 floats:
hand, gripper, two objects, the previous frame of those, the goal) with the goal visible. Every reset
draws a new object/goal placement from the episode's seed (metaworld's own seeded random reset), so
episodes are not limited to MT1's 50 fixed placements and evaluation seeds give unseen ones.
Observation `state` is binned linearly (mu_law=False): the values are metres already within about
[-0.53, 1.03]. Action: Box(-1, 1, (4,)), the expert's output clipped to it.
Episodes last a fixed 150 steps (the experts succeed within 30-95 steps and then hold the goal), so
expert and random returns cover the same horizon; only episodes that reach success are kept.
"""

import functools
import warnings

import gymnasium as gym
import numpy as np

from gato_jax.envs.control import ControlTask
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

EPISODE_STEPS = 150
STATE_SIZE = 39

# dataset name -> (metaworld env name, policy class name in metaworld.policies)
TASK_POLICIES = {
    "metaworld_reach": ("reach-v3", "SawyerReachV3Policy"),
    "metaworld_push": ("push-v3", "SawyerPushV3Policy"),
    "metaworld_drawer_open": ("drawer-open-v3", "SawyerDrawerOpenV3Policy"),
    "metaworld_button_press": ("button-press-v3", "SawyerButtonPressV3Policy"),
}


def _make_env(env_name: str, seed: int):
  import metaworld  # registers the Meta-World/* ids with gymnasium
  del metaworld
  return gym.make("Meta-World/goal_observable", env_name=env_name, seed=seed, disable_env_checker=True)


def _reset(env, seed: int):
  u = env.unwrapped
  # Metaworld ignores reset(seed=...): reseed its generator, and let this one reset draw a fresh
  # placement (rand_vec) from it, then freeze it for the episode as metaworld does after a task change.
  u.seed(seed)
  u._freeze_rand_vec = False  # pylint: disable=protected-access
  u.seeded_rand_vec = True
  try:
    return env.reset()
  finally:
    u._freeze_rand_vec = True  # pylint: disable=protected-access


def _state(raw_obs, env):
  del env
  return {"state": np.asarray(raw_obs, np.float32)}


def _scripted_expert(policy_name: str, env):
  del env
  from metaworld import policies
  # The policies warn that their gains can exceed [-1, 1]; the actions are clipped to the space below.
  warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
  scripted = getattr(policies, policy_name)()

  def policy(observation, raw_obs, env):
    del observation, env
    return np.clip(scripted.get_action(raw_obs), -1.0, 1.0).astype(np.float32)

  return policy


def _succeeded(episode) -> bool:
  return any(float(info.get("success", 0.0)) > 0 for info in episode["infos"])


def make_task(name: str, env_name: str, policy_name: str, episode_steps: int = EPISODE_STEPS):
  spec = TaskSpec(name, {"state": FieldSpec("continuous", (STATE_SIZE,), mu_law=False)},
                  ActionSpec("continuous", (4,), (), (-1.0,) * 4, (1.0,) * 4))
  return ControlTask(
      name=name, spec=spec, make_env=functools.partial(_make_env, env_name), observation_fn=_state,
      make_expert=functools.partial(_scripted_expert, policy_name), keep_episode=_succeeded,
      max_steps=episode_steps, reset_fn=_reset,
      description=f"Meta-World {env_name}, scripted {policy_name}, {episode_steps}-step successful episodes.")


# (task, default number of train episodes for gato-data)
TASKS = [(make_task(name, env_name, policy), 200) for name, (env_name, policy) in TASK_POLICIES.items()]
