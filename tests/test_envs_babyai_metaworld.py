"""BabyAI and Meta-World at scale: every level the bot plays, all 50 v3 tasks, experts beat random."""

import numpy as np
import pytest

from gato_jax.envs import babyai, metaworld
from gato_jax.envs.control import SplitStats, generate_episodes
from gato_jax.envs import registry

BABYAI = {task.name: task for task, _ in babyai.TASKS}
METAWORLD = {task.name: task for task, _ in metaworld.TASKS}


def _returns(task, n, policy, seed=3):
  stats = SplitStats()
  for _ in generate_episodes(task, n, seed, "returns", stats, policy=policy):
    pass
  return stats


def test_metaworld_lists_every_v3_task_with_the_policy_metaworld_ships():
  import metaworld as mw
  from metaworld import policies
  assert set(metaworld.ENV_POLICIES) == set(mw.ALL_V3_ENVIRONMENTS)
  for env_name, (policy, steps) in metaworld.ENV_POLICIES.items():
    assert policies.ENV_POLICY_MAP[env_name].__name__ == policy, env_name
    assert 100 <= steps <= 500
  assert len(METAWORLD) == 50 and "metaworld_drawer_open" in METAWORLD


def test_babyai_lists_every_level_but_the_ones_the_bot_cannot_play():
  import gymnasium as gym
  import minigrid  # registers the levels
  del minigrid
  registered = {k for k in gym.registry if k.startswith("BabyAI-")}
  assert set(babyai.LEVEL_IDS) | set(babyai.UNSOLVED) == registered
  assert not set(babyai.LEVEL_IDS) & set(babyai.UNSOLVED)
  assert len(babyai.LEVELS) == len(babyai.LEVEL_IDS)  # names are unique
  # The names datasets were built under before the table grew.
  for name in ("babyai_gotoredball", "babyai_gotolocal", "babyai_pickuploc", "babyai_opendoor",
               "babyai_putnextlocal"):
    assert name in BABYAI


def test_tasks_report_their_folder_as_domain():
  assert {registry.domain_of(t) for t in BABYAI.values()} == {"babyai"}
  assert {registry.domain_of(t) for t in METAWORLD.values()} == {"metaworld"}


def test_a_bot_failure_ends_the_episode_instead_of_the_build():
  task = BABYAI["babyai_gotoredball"]
  env = task.make_env(0)
  task.reset(env, 5)
  env.unwrapped.bot_failed = True  # what the expert sets when BabyAIBot raises
  *_, truncated, _ = env.step(0)
  assert truncated
  task.reset(env, 5)
  *_, truncated, _ = env.step(0)
  assert not truncated


def _check_expert_beats_random(task, n=2):
  stats = SplitStats()
  episodes = list(generate_episodes(task, n, 1, "train", stats))  # validated against the spec inside
  assert len(episodes) == n and stats.kept == n
  expert = np.mean([e["episode_return"] for _, e in episodes])
  random = np.mean(_returns(task, n, "random").returns)
  assert expert > random, (task.name, expert, random)


@pytest.mark.parametrize("name", ["babyai_gotoobjmazes4", "babyai_unlocklocal", "babyai_putnexts4n1",
                                  "babyai_oneroomS8".lower()])
def test_new_babyai_levels_make_valid_winning_episodes(name):
  _check_expert_beats_random(BABYAI[name])


@pytest.mark.parametrize("name", ["metaworld_door_open", "metaworld_coffee_button"])
def test_new_metaworld_tasks_make_valid_successful_episodes(name):
  _check_expert_beats_random(METAWORLD[name], n=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BABYAI))
def test_every_babyai_level(name):
  _check_expert_beats_random(BABYAI[name], n=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METAWORLD))
def test_every_metaworld_task(name):
  _check_expert_beats_random(METAWORLD[name], n=1)


def test_an_endless_bot_replan_is_cut_by_a_search_count_not_a_clock():
  # UnlockToUnlock, train seed 0 of build seed 1: the bot pushes subgoals forever on its 3rd step.
  from gato_jax.envs.control import episode_seed, run_episode
  task = BABYAI["babyai_unlocktounlock"]
  env = task.make_env(0)
  runs = [run_episode(task, env, task.make_expert, episode_seed(1, "train", 0)) for _ in range(2)]
  assert runs[0]["episode_return"] == 0 and len(runs[0]["infos"]) < 10  # cut, then rejected by the filter
  assert np.array_equal(runs[0]["steps"]["action"], runs[1]["steps"]["action"])
