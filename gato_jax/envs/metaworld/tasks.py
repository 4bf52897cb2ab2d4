"""Meta-World (v3) tasks driven by the scripted policies that ship in the `metaworld` package.

Environment: `gym.make("Meta-World/goal_observable", env_name=...)`, the MT1 observation (39 floats:
hand, gripper, two objects, the previous frame of those, the goal) with the goal visible. Every reset
draws a new object/goal placement from the episode's seed (metaworld's own seeded random reset), so
episodes are not limited to MT1's 50 fixed placements and evaluation seeds give unseen ones.
Observation `state` is binned linearly (mu_law=False): the values are metres already within about
[-0.53, 1.03]. Action: Box(-1, 1, (4,)), the expert's output clipped to it.
Episodes last a fixed number of steps per task, 150 for most (the experts succeed within 30-130 steps
and then hold the goal), so expert and random returns cover the same horizon; only episodes that reach
success are kept. All 50 v3 tasks, named metaworld_<task with underscores> (metaworld_drawer_open).
"""

import functools
import warnings

import gymnasium as gym
import numpy as np

from gato_jax.envs.control import ControlTask
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

EPISODE_STEPS = 150
STATE_SIZE = 39

# metaworld env name (v3) -> (policy class in metaworld.policies, episode steps). Every task of
# metaworld.ALL_V3_ENVIRONMENTS with the scripted policy metaworld.policies.ENV_POLICY_MAP gives it
# (tests check both). Episode steps: 150 where the policy's first success comes by step ~130 (5-seed
# probe: most by 40-110); longer where it came later (bin-picking 137, stick-pull 193, push-back 413).
ENV_POLICIES = {
    "assembly-v3": ("SawyerAssemblyV3Policy", 150),
    "basketball-v3": ("SawyerBasketballV3Policy", 150),
    "bin-picking-v3": ("SawyerBinPickingV3Policy", 200),
    "box-close-v3": ("SawyerBoxCloseV3Policy", 200),
    "button-press-topdown-v3": ("SawyerButtonPressTopdownV3Policy", 150),
    "button-press-topdown-wall-v3": ("SawyerButtonPressTopdownWallV3Policy", 150),
    "button-press-v3": ("SawyerButtonPressV3Policy", 150),
    "button-press-wall-v3": ("SawyerButtonPressWallV3Policy", 150),
    "coffee-button-v3": ("SawyerCoffeeButtonV3Policy", 150),
    "coffee-pull-v3": ("SawyerCoffeePullV3Policy", 150),
    "coffee-push-v3": ("SawyerCoffeePushV3Policy", 150),
    "dial-turn-v3": ("SawyerDialTurnV3Policy", 150),
    "disassemble-v3": ("SawyerDisassembleV3Policy", 250),
    "door-close-v3": ("SawyerDoorCloseV3Policy", 150),
    "door-lock-v3": ("SawyerDoorLockV3Policy", 150),
    "door-open-v3": ("SawyerDoorOpenV3Policy", 150),
    "door-unlock-v3": ("SawyerDoorUnlockV3Policy", 150),
    "hand-insert-v3": ("SawyerHandInsertV3Policy", 150),
    "drawer-close-v3": ("SawyerDrawerCloseV3Policy", 150),
    "drawer-open-v3": ("SawyerDrawerOpenV3Policy", 150),
    "faucet-open-v3": ("SawyerFaucetOpenV3Policy", 150),
    "faucet-close-v3": ("SawyerFaucetCloseV3Policy", 150),
    "hammer-v3": ("SawyerHammerV3Policy", 150),
    "handle-press-side-v3": ("SawyerHandlePressSideV3Policy", 150),
    "handle-press-v3": ("SawyerHandlePressV3Policy", 150),
    "handle-pull-side-v3": ("SawyerHandlePullSideV3Policy", 150),
    "handle-pull-v3": ("SawyerHandlePullV3Policy", 150),
    "lever-pull-v3": ("SawyerLeverPullV3Policy", 150),
    "pick-place-wall-v3": ("SawyerPickPlaceWallV3Policy", 150),
    "pick-out-of-hole-v3": ("SawyerPickOutOfHoleV3Policy", 200),
    "pick-place-v3": ("SawyerPickPlaceV3Policy", 150),
    "plate-slide-v3": ("SawyerPlateSlideV3Policy", 150),
    "plate-slide-side-v3": ("SawyerPlateSlideSideV3Policy", 150),
    "plate-slide-back-v3": ("SawyerPlateSlideBackV3Policy", 150),
    "plate-slide-back-side-v3": ("SawyerPlateSlideBackSideV3Policy", 150),
    "peg-insert-side-v3": ("SawyerPegInsertionSideV3Policy", 150),
    "peg-unplug-side-v3": ("SawyerPegUnplugSideV3Policy", 200),
    "soccer-v3": ("SawyerSoccerV3Policy", 150),
    "stick-push-v3": ("SawyerStickPushV3Policy", 150),
    "stick-pull-v3": ("SawyerStickPullV3Policy", 250),
    "push-v3": ("SawyerPushV3Policy", 150),
    "push-wall-v3": ("SawyerPushWallV3Policy", 150),
    "push-back-v3": ("SawyerPushBackV3Policy", 500),
    "reach-v3": ("SawyerReachV3Policy", 150),
    "reach-wall-v3": ("SawyerReachWallV3Policy", 150),
    "shelf-place-v3": ("SawyerShelfPlaceV3Policy", 150),
    "sweep-into-v3": ("SawyerSweepIntoV3Policy", 150),
    "sweep-v3": ("SawyerSweepV3Policy", 150),
    "window-open-v3": ("SawyerWindowOpenV3Policy", 150),
    "window-close-v3": ("SawyerWindowCloseV3Policy", 150),
}


def dataset_name(env_name: str) -> str:
  """metaworld_<env name without -v3, dashes as underscores>, e.g. metaworld_drawer_open."""
  return "metaworld_" + env_name.removesuffix("-v3").replace("-", "_")


# dataset name -> (metaworld env name, policy class name, episode steps)
TASK_POLICIES = {dataset_name(env): (env, policy, steps) for env, (policy, steps) in ENV_POLICIES.items()}


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
  from metaworld import policies  # optional simulator
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
TASKS = [(make_task(name, env_name, policy, steps), 200)
         for name, (env_name, policy, steps) in TASK_POLICIES.items()]
