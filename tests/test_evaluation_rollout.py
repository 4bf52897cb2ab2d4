"""Rollouts: lockstep batches, step limits, simulator crashes recorded as failed episodes, and one short
rollout per domain (classic control, BabyAI, Meta-World) with a freshly initialised Gato."""

import numpy as np
import pytest

from gato_jax.envs import control, registry
from gato_jax.acting import agent as agent_lib
from gato_jax.evaluation import rollout
from testlib import eval_testing as testing
from gato_jax.tokenizers import TextTokenizer, VocabLayout


class RecordingActor:
  """Acts like the expert and records the batches it was asked about."""

  def __init__(self, task):
    self.expert = rollout.ExpertActor(task)
    self.batches = []

  def begin(self, seeds):
    self.batches.append(list(seeds))
    self.expert.begin(seeds)

  def act(self, observations, raws, envs):
    return self.expert.act(observations, raws, envs)


def test_lockstep_batches_return_results_in_seed_order():
  task = testing.counting_task(length=5)
  actor = RecordingActor(task)
  seeds = [11, 12, 13, 14, 15]
  results = rollout.run_episodes(task, actor, seeds, num_envs=2)
  assert actor.batches == [[11, 12], [13, 14], [15]]
  assert [r.seed for r in results] == seeds
  assert all(r.episode_return == 5.0 and r.length == 5 and r.success and not r.crashed for r in results)
  assert [len(r.actions) for r in results] == [5] * 5


def test_max_steps_caps_episodes():
  task = testing.counting_task(length=50)
  results = rollout.run_episodes(task, rollout.ExpertActor(task), [1, 2], num_envs=2, max_steps=7)
  assert [r.length for r in results] == [7, 7]
  assert [r.success for r in results] == [False, False]


def test_a_simulator_crash_is_a_failed_episode_not_a_crashed_evaluation():
  task = testing.counting_task(length=6, crash_at=3, crash_seeds=(21,))
  results = rollout.run_episodes(task, rollout.ExpertActor(task), [20, 21, 22, 23], num_envs=2,
                                 failure_return=1.5)
  crashed = results[1]
  assert crashed.crashed and crashed.length == 3 and crashed.raw_return == 3.0
  assert crashed.episode_return == 1.5  # min(return so far, the random policy's return)
  assert "step: RuntimeError: simulated simulator crash at step 3" in crashed.error
  # The other episodes, including the next one in the crashed slot (a fresh simulator), are intact.
  assert [r.episode_return for r in results] == [6.0, 1.5, 6.0, 6.0]
  assert [r.crashed for r in results] == [False, True, False, False]


def test_a_simulator_that_cannot_be_made_is_a_failed_episode():
  task = testing.counting_task()

  def broken(seed):
    raise OSError("no display")

  import dataclasses  # pylint: disable=g-import-not-at-top
  task = dataclasses.replace(task, make_env=broken)
  results = rollout.run_episodes(task, rollout.RandomActor(task.spec), [1, 2], num_envs=2, failure_return=-3.0)
  assert all(r.crashed and r.episode_return == -3.0 and "make_env: OSError" in r.error for r in results)


def test_random_actor_is_seeded_and_stays_in_the_action_space():
  task = testing.counting_task(length=20, continuous=True)
  first = rollout.run_episodes(task, rollout.RandomActor(task.spec, seed=4), [3], num_envs=1)[0]
  again = rollout.run_episodes(task, rollout.RandomActor(task.spec, seed=4), [3], num_envs=1)[0]
  np.testing.assert_array_equal(np.stack(first.actions), np.stack(again.actions))
  assert np.all(np.abs(np.stack(first.actions)) <= 1.0)


def test_evaluation_seeds_are_disjoint_from_the_datas():
  seeds = rollout.evaluation_seeds(0, 50)
  data = {control.episode_seed(0, purpose, i) for purpose in ("train", "validation", "returns")
          for i in range(5000)}
  assert len(set(seeds)) == 50 and not data & set(seeds)
  assert seeds[0] == control.episode_seed(0, "evaluation", 0)


@pytest.fixture(scope="module")
def config():
  return testing.tiny_config(context=128)


@pytest.fixture(scope="module")
def model(config):
  return testing.tiny_model(config)


@pytest.mark.parametrize("name,max_steps", [("cartpole", 12), ("babyai_gotoredball", 6), ("metaworld_reach", 6)])
def test_one_short_rollout_per_domain_with_a_fresh_model(name, max_steps, config, model, tmp_path_factory):
  """The data's simulator, its observation format, a prompt from an expert episode of the same task."""
  task = registry.get(name)
  layout = VocabLayout.from_config(config.vocab)
  text = None
  if any(f.modality == "text" for _, f in task.spec.observation_fields()):
    text = TextTokenizer(testing.tiny_sentencepiece(str(tmp_path_factory.mktemp("sp"))))
  env = task.make_env(0)
  demo = control.run_episode(task, env, task.make_expert, control.episode_seed(0, "validation", 0))
  env.close()
  agent = agent_lib.GatoAgent(model, layout, task.spec, text, context_length=128, greedy=False, seed=1,
                              prompt_tokens=64)
  actor = agent_lib.GatoActor(agent, [demo])
  results = rollout.run_episodes(task, actor, rollout.evaluation_seeds(0, 2), num_envs=2, max_steps=max_steps,
                                 failure_return=-1e9)
  assert len(results) == 2 and not any(r.crashed for r in results), [r.error for r in results]
  assert all(1 <= r.length <= max_steps and np.isfinite(r.episode_return) for r in results)
  assert all(len(r.actions) == r.length for r in results)
  assert agent.num_envs == 2 and all(agent._steps)  # pylint: disable=protected-access
