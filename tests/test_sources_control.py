"""Control datasets: every registered one builds tiny, reads back per the on-disk contract, beats random."""

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data_pipelines as dp
from gato_jax.envs import control
from data_pipelines.control_builder import make_control_builder
from gato_jax.episodes import (ActionSpec, EpisodeError, FieldSpec, TaskSpec, flatten_spec, get_path,
                               validate_episode)

# The original domains' datasets; the newer domains (all of Meta-World and BabyAI, Atari, MuJoCo / DM
# Control) are covered by tests/test_envs_*.py on short episodes: building all ~150 here would cost CI
# its budget.
CONTROL = sorted(name for name, entry in dp.DATASETS.items() if entry.kind == "control" and name in {
    "cartpole", "pendulum", "mountaincar", "lunarlander", "babyai_gotoredball", "babyai_gotoredball_image",
    "babyai_gotolocal", "babyai_pickuploc", "babyai_opendoor", "babyai_putnextlocal", "metaworld_reach",
    "metaworld_push", "metaworld_drawer_open", "metaworld_button_press"})


def read_episodes(name, data_dir, split="train"):
  """Episodes as numpy: {"steps": {...stacked...}, "episode_return", "episode_id"}."""
  builder = tfds.builder(name, data_dir=data_dir)
  episodes = []
  for ex in builder.as_dataset(split=split):
    steps = tf.data.experimental.get_single_element(ex["steps"].batch(100_000))
    episodes.append({"steps": tf.nest.map_structure(lambda t: t.numpy(), steps),
                     "episode_return": float(ex["episode_return"]), "episode_id": int(ex["episode_id"])})
  return builder, sorted(episodes, key=lambda e: e["episode_id"])


def as_episode_format(episode, spec):
  """Decoded TFDS text comes back as bytes; validate_episode takes str or bytes alike."""
  steps = dict(episode["steps"])
  obs = {}
  for path, field in flatten_spec(spec.observation):
    node = obs
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    value = get_path(steps["observation"], path)
    node[leaf] = list(value) if field.modality == "text" else value
  steps["observation"] = obs
  return {"steps": steps}


@pytest.mark.parametrize("name", CONTROL)
def test_control_dataset_builds_and_reads_back(name, tmp_path):
  report = dp.build(name, str(tmp_path), episodes=3, validation_episodes=1, seed=1, return_episodes=3)
  assert (report.num_train, report.num_validation) == (3, 1)
  spec = dp.get(name).task.spec
  builder, episodes = read_episodes(name, str(tmp_path))
  meta = builder.info.metadata
  assert TaskSpec.from_dict(meta["task_spec"]) == spec
  assert meta["episodes_kept"] == 4 and meta["episodes_rejected"] >= 0
  assert meta["expert_episodes"] >= 3 and meta["random_episodes"] == 3
  # The expert the data came from beats a uniformly random policy on the same initial states.
  assert meta["expert_return"] > meta["random_return"], meta
  assert len(episodes) == 3
  train_lo = control.episode_seed(1, "train", 0)
  for episode in episodes:
    assert train_lo <= episode["episode_id"] < train_lo + control.MAX_EPISODES_PER_PURPOSE
    length = validate_episode(as_episode_format(episode, spec), spec, episode["episode_id"])
    steps = episode["steps"]
    np.testing.assert_allclose(steps["reward"].sum(), episode["episode_return"], rtol=1e-4, atol=1e-4)
    assert steps["is_first"].tolist() == [True] + [False] * (length - 1)
    assert steps["is_last"].tolist() == [False] * (length - 1) + [True]
    assert not steps["is_terminal"][:-1].any()
    assert steps["action"].dtype == (np.float32 if spec.action.kind == "continuous" else np.int32)
    for path, field in spec.observation_fields():
      value = get_path(steps["observation"], path)
      if field.modality == "image":
        assert value.dtype == np.uint8 and value.shape == (length, *field.shape)
      elif field.modality == "discrete":
        assert value.dtype == np.int32
      elif field.modality == "continuous":
        assert value.dtype == np.float32


def test_episode_ids_are_the_seeds_that_replay_them(tmp_path):
  dp.build("pendulum", str(tmp_path), episodes=2, validation_episodes=1, seed=4, return_episodes=2)
  task = dp.get("pendulum").task
  _, episodes = read_episodes("pendulum", str(tmp_path))
  assert [e["episode_id"] for e in episodes] == [control.episode_seed(4, "train", i) for i in range(2)]
  replay = control.run_episode(task, task.make_env(0), task.make_expert, episodes[1]["episode_id"])
  np.testing.assert_array_equal(replay["steps"]["observation"]["state"],
                                episodes[1]["steps"]["observation"]["state"])
  _, validation = read_episodes("pendulum", str(tmp_path), "validation")
  assert validation[0]["episode_id"] == control.episode_seed(4, "validation", 0)


def _dataset_files(path):
  return {f: open(os.path.join(path, f), "rb").read() for f in sorted(os.listdir(path))
          if ".tfrecord" in f}


def test_same_seed_same_files_other_seed_other_episodes(tmp_path):
  name = "babyai_gotoredball_image"  # image + text + discrete: every encoder is in the files
  a = dp.build(name, str(tmp_path / "a"), episodes=4, validation_episodes=1, seed=7, return_episodes=2)
  b = dp.build(name, str(tmp_path / "b"), episodes=4, validation_episodes=1, seed=7, return_episodes=2)
  c = dp.build(name, str(tmp_path / "c"), episodes=4, validation_episodes=1, seed=8, return_episodes=2)
  files_a, files_b = _dataset_files(a.path), _dataset_files(b.path)
  assert files_a and files_a == files_b
  assert a.metadata["expert_return"] == b.metadata["expert_return"]
  assert a.metadata["random_return"] == b.metadata["random_return"]
  _, ep_a = read_episodes(name, str(tmp_path / "a"))
  _, ep_c = read_episodes(name, str(tmp_path / "c"))
  assert {e["episode_id"] for e in ep_a}.isdisjoint({e["episode_id"] for e in ep_c})
  assert any(x["steps"]["observation"]["mission"].tolist() != y["steps"]["observation"]["mission"].tolist()
             or not np.array_equal(x["steps"]["action"], y["steps"]["action"]) for x, y in zip(ep_a, ep_c))


def test_refuses_to_overwrite_unless_asked(tmp_path):
  dp.build("cartpole", str(tmp_path), episodes=1, validation_episodes=1, seed=0, return_episodes=2)
  with pytest.raises(dp.DatasetExistsError, match=r"'cartpole' is already built .*--overwrite"):
    dp.build("cartpole", str(tmp_path), episodes=2, validation_episodes=1, seed=1, return_episodes=2)
  report = dp.build("cartpole", str(tmp_path), episodes=2, validation_episodes=1, seed=1,
                    return_episodes=2, overwrite=True)
  assert report.num_train == 2 and report.metadata["build_seed"] == 1
  assert tfds.builder("cartpole", data_dir=str(tmp_path)).info.splits["train"].num_examples == 2


def test_seed_ranges_are_disjoint():
  ranges = {}
  for seed in (0, 1, 2):
    for purpose in control.SEED_OFFSETS:
      lo = control.episode_seed(seed, purpose, 0)
      hi = control.episode_seed(seed, purpose, control.MAX_EPISODES_PER_PURPOSE - 1)
      ranges[(seed, purpose)] = (lo, hi)
  spans = sorted(ranges.values())
  assert all(hi < next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))
  with pytest.raises(ValueError, match="outside"):
    control.episode_seed(0, "train", control.MAX_EPISODES_PER_PURPOSE)


# --- malformed episodes stop the build, naming dataset, split, episode and field ---------------------

def _cartpole_task(name, observation_fn=None, expert=None, action_fn=None, state_shape=(4,)):
  spec = TaskSpec(name, {"state": FieldSpec("continuous", state_shape)}, ActionSpec("discrete", (), (2,)))
  base = dp.get("cartpole").task
  return control.ControlTask(
      name=name, spec=spec, make_env=lambda seed: gym.make("CartPole-v1"),
      observation_fn=observation_fn or base.observation_fn, make_expert=expert or base.make_expert,
      action_fn=action_fn, max_steps=50)


def _nan_at_step_3():
  count = {"t": 0}

  def observation_fn(raw_obs, env):
    state = np.asarray(raw_obs, np.float32).copy()
    count["t"] += 1
    if count["t"] == 4:
      state[2] = np.nan
    return {"state": state}

  return observation_fn


def _always(action):
  return lambda env: (lambda observation, raw_obs, env: action)


BROKEN = {
    "nan": (dict(observation_fn=_nan_at_step_3()), r"step 3: field 'observation/state': non-finite"),
    "missing_key": (dict(observation_fn=lambda raw, env: {"velocity": np.zeros(4, np.float32)}),
                    r"field 'observation': missing \['state'\]"),
    "wrong_shape": (dict(state_shape=(5,)),
                    r"field 'observation/state': per-step shape \(4,\), expected \(5,\)"),
    "action_outside": (dict(expert=_always(5), action_fn=lambda a: int(a) % 2),
                       r"step 0: field 'action': \[5\] is outside the action space"),
    "float_action": (dict(expert=_always(1.0), action_fn=int),
                     r"field 'action': dtype float64, expected integers"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_episode_stops_the_build(case, tmp_path):
  kwargs, message = BROKEN[case]
  task = _cartpole_task(f"broken_{case}", **kwargs)
  builder_cls = make_control_builder(task, register_with_tfds=False)
  builder = builder_cls(data_dir=str(tmp_path), num_train=2, num_validation=1, return_episodes=2)
  with pytest.raises(EpisodeError, match=rf"dataset 'broken_{case}', split 'train': task 'broken_{case}', "
                     rf"episode 0 \(env seed 0\).*{message}"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
  assert not dp.is_built(builder)


def test_a_failing_rollout_names_its_episode():
  task = _cartpole_task("broken_env_action", expert=_always(7))  # CartPole asserts on its action
  with pytest.raises(RuntimeError, match=r"dataset 'broken_env_action', split 'validation', episode 0 "
                     r"\(env seed 400000\): the rollout failed: AssertionError"):
    list(control.generate_episodes(task, 1, seed=0, split="validation"))


def _changes_at_step_2(change):
  count = {"t": -1}

  def observation_fn(raw_obs, env):
    count["t"] += 1
    state = np.asarray(raw_obs, np.float32)
    return change(state) if count["t"] == 2 else {"state": state}

  return observation_fn


@pytest.mark.parametrize("change,message", [
    (lambda state: {"state": state[:3]}, r"step 2: field 'observation/state': shape \(3,\), expected \(4,\)"),
    (lambda state: {"velocity": state}, r"step 2: field 'observation/state' is missing"),
])
def test_one_bad_step_is_named_by_step_and_field(change, message):
  task = _cartpole_task("broken_one_step", observation_fn=_changes_at_step_2(change))
  with pytest.raises(EpisodeError, match=r"dataset 'broken_one_step', split 'train', episode 0 \(env seed 0\), "
                     + message):
    list(control.generate_episodes(task, 1, seed=0, split="train"))


def test_empty_episode_is_refused():
  task = dp.get("cartpole").task
  empty = {"steps": {"observation": {"state": np.zeros((0, 4), np.float32)},
                     "action": np.zeros((0,), np.int32), "reward": np.zeros((0,), np.float32),
                     "is_first": np.zeros((0,), bool), "is_last": np.zeros((0,), bool),
                     "is_terminal": np.zeros((0,), bool)}}
  with pytest.raises(EpisodeError, match=r"dataset 'cartpole', split 'validation': task 'cartpole', "
                     r"episode 3 \(env seed 12\): field 'steps': the episode is empty"):
    control.check_episode(empty, task, "validation", 3, 12)


def test_expert_that_keeps_failing_stops_the_build():
  task = dp.get("babyai_gotoredball").task
  never = dataclasses.replace(task, name="never_kept", keep_episode=lambda episode: False,
                              spec=TaskSpec("never_kept", task.spec.observation, task.spec.action))
  with pytest.raises(RuntimeError, match=r"dataset 'never_kept', split 'train': the expert produced only 0"):
    list(control.generate_episodes(never, 1, seed=0))


# --- a user's own task: one call registers it, gato-data builds it ----------------------------------

def _acrobot_energy_expert(env):
  """Pumps energy with the sign of the second joint's velocity (a few hundred steps to swing up)."""
  def policy(observation, raw_obs, env):
    return 2 if raw_obs[5] > 0 else 0
  return policy


def test_register_control_task_makes_a_buildable_dataset(forget_new_datasets, tmp_path):
  task = control.ControlTask(
      name="user_acrobot",
      spec=TaskSpec("user_acrobot", {"state": FieldSpec("continuous", (6,))},
                    ActionSpec.from_gym_space(gym.spaces.Discrete(3))),
      make_env=lambda seed: gym.make("Acrobot-v1"),
      observation_fn=lambda raw_obs, env: {"state": np.asarray(raw_obs, np.float32)},
      make_expert=_acrobot_energy_expert, max_steps=500, description="Acrobot-v1, energy pumping.")
  entry = dp.register_control_task(task, default_episodes=2)
  assert dp.DATASETS["user_acrobot"] is entry and entry.builder.name == "user_acrobot"
  with pytest.raises(ValueError, match="already registered"):
    dp.register_control_task(task)
  report = dp.build("user_acrobot", str(tmp_path), validation_episodes=1, return_episodes=2)
  assert report.num_train == 2
  builder = tfds.builder("user_acrobot", data_dir=str(tmp_path))
  assert builder.info.metadata["expert_return"] > builder.info.metadata["random_return"]
