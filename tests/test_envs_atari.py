"""Atari (ale-py): the RAM-reading experts beat random, frames in both settings, reproducible, builds."""

import dataclasses

import numpy as np
import pytest

from gato_jax.envs import atari
from gato_jax.envs.control import SplitStats, generate_episodes

TASKS = {task.name: task for task, _ in atari.TASKS}


def _short(task, max_steps):
  """The task with fewer steps an episode (CI): a new name, so it never meets the real dataset."""
  name = f"{task.name}_ci{max_steps}"
  return dataclasses.replace(task, name=name, spec=dataclasses.replace(task.spec, name=name),
                             max_steps=max_steps)


def _episodes(task, n, policy="expert", seed=1):
  stats = SplitStats()
  episodes = list(generate_episodes(task, n, seed, "returns", stats, policy=policy))
  return episodes, stats


def test_every_game_has_both_frame_settings_and_published_scores():
  assert set(TASKS) == {f"atari_{g}{s}" for g in atari.GAMES for s in ("", "_compact")}
  for game in atari.GAMES:
    assert TASKS[f"atari_{game}"].spec.observation["image"].shape == (224, 160, 3)  # 140 patches
    assert TASKS[f"atari_{game}_compact"].spec.observation["image"].shape == (96, 96, 3)  # 36 patches
    random, human = atari.HUMAN_RANDOM[game]
    assert human > random


def test_frames_are_padded_not_stretched():
  frame = np.random.default_rng(0).integers(1, 256, (210, 160, 3), dtype=np.uint8)
  full = atari.full_frame(frame)["image"]
  assert full.dtype == np.uint8 and (full[7:217] == frame).all() and not full[:7].any() and not full[217:].any()
  compact = atari.compact_frame(frame)["image"]
  assert compact.shape == (96, 96, 3) and not compact[:6].any() and not compact[:, 90:].any()
  assert compact[6:90, 6:90].all()


@pytest.mark.parametrize("game,steps", [pytest.param("pong", 400, marks=pytest.mark.slow),
                                        ("breakout", 300), ("freeway", 100)])
def test_expert_beats_random_and_episodes_replay_from_their_seed(game, steps):
  task = _short(TASKS[f"atari_{game}_compact"], steps)
  expert, stats = _episodes(task, 1)
  assert stats.kept == 1  # validated against the spec inside generate_episodes
  again, _ = _episodes(task, 1)
  (seed, a), (seed_b, b) = expert[0], again[0]
  assert seed == seed_b and np.array_equal(a["steps"]["action"], b["steps"]["action"])
  assert np.array_equal(a["steps"]["observation"]["image"], b["steps"]["observation"]["image"])
  random, _ = _episodes(task, 1, "random")
  assert a["episode_return"] > random[0][1]["episode_return"], (a["episode_return"], random[0][1]["episode_return"])


def test_full_frame_dataset_builds(tmp_path, forget_new_datasets):
  import data_pipelines as dp
  task = _short(TASKS["atari_breakout"], 40)
  dp.register_control_task(task)
  report = dp.build(task.name, str(tmp_path), episodes=2, validation_episodes=1, seed=0, return_episodes=2)
  assert (report.num_train, report.num_validation) == (2, 1)
  assert report.metadata["task_spec"]["observation"]["image"]["shape"] == [224, 160, 3]


def test_scores_are_human_normalised_with_the_published_table():
  from gato_jax.evaluation import scores
  random, human = atari.HUMAN_RANDOM["pong"]
  assert scores.human_normalized_score(human, "atari_pong_compact") == pytest.approx(1.0)
  assert scores.human_normalized_score(random, "atari_pong") == pytest.approx(0.0)
  assert scores.human_normalized_score(0.0, "atari_pongx") is None and scores.human_normalized_score(1.0, "cartpole") is None
  task = scores.TaskScore("atari_breakout", "atari", [16.75, 16.75], [10, 10], expert_return=31.8,
                          random_return=1.7)
  assert task.to_dict()["human_normalized_score"] == pytest.approx(0.5)
  summary = scores.summarize({"atari_breakout": task.to_dict()})
  assert summary["domains"]["atari"]["iqm_human_normalized_score"] == pytest.approx(0.5)


def test_domain_iqm_interval_covers_the_iqm_and_widens_with_noise():
  from gato_jax.evaluation import scores
  rng = np.random.default_rng(0)

  def results(noise):
    return {f"t{i}": scores.TaskScore(f"t{i}", "d", list(i / 4 + noise * rng.standard_normal(20)), [1] * 20,
                                      1.0, 0.0).to_dict() for i in range(5)}
  quiet, noisy = scores.summarize(results(0.01))["domains"]["d"], scores.summarize(results(1.0))["domains"]["d"]
  assert quiet["iqm_ci_low"] <= quiet["iqm_normalized_score"] <= quiet["iqm_ci_high"]
  assert noisy["iqm_ci_high"] - noisy["iqm_ci_low"] > 10 * (quiet["iqm_ci_high"] - quiet["iqm_ci_low"])
