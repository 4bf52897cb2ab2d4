"""MuJoCo / dm_control: the model-derived controllers solve their tasks; pixels render; builds."""

import dataclasses
import gc

import numpy as np
import pytest

from gato_jax.envs import mujoco, registry
from gato_jax.envs.control import SplitStats, generate_episodes

TASKS = {task.name: task for task, _ in mujoco.TASKS}
# Expert returns well past what random control gets (measured: data_pipelines/README.md).
SOLVED = {"mujoco_inverted_pendulum": 1000.0, "mujoco_inverted_double_pendulum": 9300.0,
          "mujoco_reacher": -8.0, "dmc_cartpole_swingup": 800.0, "dmc_point_mass_easy": 800.0,
          "dmc_reacher_easy": 15.0}  # 50 steps: the reach takes ~15-25


def _returns(task, n, policy="expert", seed=1):
  stats = SplitStats()
  for _ in generate_episodes(task, n, seed, "returns", stats, policy=policy):
    pass
  return stats.returns


@pytest.mark.parametrize("name", sorted(SOLVED))
def test_controller_solves_the_task_and_beats_random(name):
  task = TASKS[name]
  expert = _returns(task, 2)
  assert min(expert) >= SOLVED[name], expert
  assert max(_returns(task, 2, "random")) < min(expert)


def test_domains():
  assert registry.domain_of(TASKS["mujoco_reacher"]) == "mujoco"
  assert registry.domain_of(TASKS["dmc_cartpole_swingup"]) == "dm_control"


def test_dm_control_episodes_are_functions_of_their_seed():
  task = TASKS["dmc_point_mass_easy"]
  env = task.make_env(0)
  first = [task.observation_fn(task.reset(env, s)[0], env)["state"] for s in (7, 8, 7)]
  assert np.array_equal(first[0], first[2]) and not np.array_equal(first[0], first[1])


@pytest.mark.slow  # a renderer process: ~30 s on a loaded 2-core machine
def test_pixels_are_a_64x64_camera_frame_also_next_to_tensorflow(tmp_path, forget_new_datasets):
  import data_pipelines as dp  # loads TensorFlow: dm_control must then render in its child process
  import tensorflow_datasets as tfds
  task = TASKS["dmc_cartpole_swingup_pixels"]
  name = "dmc_cartpole_swingup_pixels_ci"
  short = dataclasses.replace(task, name=name, spec=dataclasses.replace(task.spec, name=name), max_steps=5)
  stats = SplitStats()
  (_, episode), = generate_episodes(short, 1, 0, "returns", stats)
  image = episode["steps"]["observation"]["image"]
  assert image.shape == (5, 64, 64, 3) and image.dtype == np.uint8 and image.std() > 5
  dp.register_control_task(short)
  dp.build(name, str(tmp_path), episodes=1, validation_episodes=1, seed=0, return_episodes=1)
  stored = next(iter(tfds.builder(name, data_dir=str(tmp_path)).as_dataset(split="train")))
  frames = np.stack([s["observation"]["image"].numpy() for s in stored["steps"]])
  assert frames.shape == (5, 64, 64, 3) and frames.std() > 5



@pytest.mark.slow  # a renderer process
def test_the_reacher_camera_shows_the_target_where_this_episode_put_it():
  # The target is a geom the task moves every episode, not part of the physics state: the renderer
  # child must draw it where the episode's model has it, or the pixels hide the goal they are for.
  task = TASKS["dmc_reacher_easy_pixels"]
  env = task.make_env(0)
  try:
    for seed in (3, 4):
      raw, _ = task.reset(env, seed)
      image = task.observation_fn(raw, env)["image"].astype(int)
      red = (image[..., 0] > 150) & (image[..., 1] < 110) & (image[..., 2] < 110)
      rows, cols = np.nonzero(red)
      assert len(rows) > 20, f"no target in the frame of seed {seed}"
      # The fixed camera looks straight down from 0.75 m with a 45 degree field: 0.31 m to each edge.
      x, y = env.physics.named.data.geom_xpos["target"][:2]
      half = 0.75 * np.tan(np.radians(22.5))
      expected = (32 - y / half * 32, 32 + x / half * 32)  # (row, column)
      assert abs(rows.mean() - expected[0]) < 1.5 and abs(cols.mean() - expected[1]) < 1.5, \
          (seed, rows.mean(), cols.mean(), expected)
  finally:
    env.close()


@pytest.mark.slow  # a renderer process
def test_an_env_dropped_without_close_takes_its_render_child_with_it():
  env = TASKS["dmc_point_mass_easy"].make_env(0)
  env.reset(0)
  assert env.render(16, 16).shape == (16, 16, 3)
  child = env._child._proc  # pylint: disable=protected-access
  del env
  gc.collect()
  assert child.wait(timeout=30) is not None

def test_state_dataset_builds(tmp_path):
  import data_pipelines as dp
  report = dp.build("mujoco_reacher", str(tmp_path), episodes=3, validation_episodes=1, seed=0,
                    return_episodes=3)
  assert report.metadata["expert_return"] > report.metadata["random_return"] + 20


@pytest.mark.slow  # child processes (replay, then dm_control's renderer)
def test_gifs_render_for_gymnasium_and_dm_control_bodies(tmp_path):
  from gato_jax.evaluation import replay
  requests = [replay.request(TASKS[name], 5, [np.zeros(TASKS[name].spec.action.shape, np.float32)] * 6,
                             str(tmp_path / f"{name}.gif"), max_frames=4)
              for name in ("mujoco_reacher", "dmc_cartpole_swingup")]
  paths = replay.render_gifs(requests, timeout_s=300)
  assert all(paths.values()), paths
