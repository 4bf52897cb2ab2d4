"""gato-eval's rollout loop acts in every new domain: the expert, run through it, scores like the data."""

import pytest

from gato_jax.envs import registry
from gato_jax.evaluation import rollout


@pytest.mark.parametrize("name,max_steps,min_return", [
    ("babyai_bosslevel", 0, 0.5),  # the level's own limit; the bot wins these seeds
    ("metaworld_door_open", 0, 500.0),
    ("mujoco_reacher", 0, -10.0),
    ("dmc_point_mass_easy", 300, 100.0),
    ("atari_breakout_compact", 250, 1.0),
])
def test_expert_through_the_evaluation_loop(name, max_steps, min_return):
  task = registry.get(name)
  seeds = rollout.evaluation_seeds(0, 2)
  results = rollout.run_episodes(task, rollout.ExpertActor(task), seeds, num_envs=2, max_steps=max_steps)
  assert [r.seed for r in results] == seeds and not any(r.crashed for r in results)
  assert all(r.episode_return >= min_return for r in results), [r.episode_return for r in results]
  random = rollout.run_episodes(task, rollout.RandomActor(task.spec), seeds, num_envs=2, max_steps=max_steps)
  assert sum(r.episode_return for r in random) < sum(r.episode_return for r in results)
