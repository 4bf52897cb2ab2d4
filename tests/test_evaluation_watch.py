"""gato-eval's checkpoint handling: watch mode picks up new checkpoints, clear errors on bad input, and
(slow) a whole evaluation of a checkpoint on freshly built datasets."""

import json
import os
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from flax import nnx

from gato_jax.evaluation import datasets, evaluator as evaluator_lib, task_choice
from testlib import data_testing as data_testing
from testlib import eval_testing as testing
from gato_jax.evaluation.datasets import EvaluationError
from gato_jax.model import options


@pytest.fixture(scope="module")
def config():
  return testing.tiny_config()


def param_sum(model) -> float:
  return float(sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def test_committed_checkpoints_ignore_unfinished_saves(tmp_path, config):
  testing.write_checkpoint(config, str(tmp_path), 3)
  os.makedirs(tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-123")
  # Orbax's tmp directory of an unfinished save is not a checkpoint (Orbax's own listing decides, for
  # gato-train and gato-eval alike: tests/test_reliability_checkpoints.py).
  assert [c.step for c in evaluator_lib.committed_checkpoints(str(tmp_path))] == [3]


def test_watch_evaluates_each_new_checkpoint(tmp_path, config):
  workdir = str(tmp_path)
  written = {1: testing.tiny_model(config, seed=1), 2: testing.tiny_model(config, seed=2)}
  testing.write_checkpoint(config, workdir, 1, model=written[1])
  evaluator = evaluator_lib.Evaluator(config, workdir, tasks=[], load_data=False)
  seen, first_done = {}, threading.Event()

  def fake_evaluate(model, step, checkpoint_path=""):
    seen[step] = (param_sum(model), checkpoint_path)
    first_done.set()
    return {"step": step}

  evaluator.evaluate_model = fake_evaluate
  result = {}
  watcher = threading.Thread(target=lambda: result.setdefault(
      "steps", evaluator.watch(interval_s=0.1, timeout_s=120, final_step=2)))
  watcher.start()
  assert first_done.wait(120), "the watcher never evaluated the first checkpoint"
  testing.write_checkpoint(config, workdir, 2, model=written[2])  # training writes the next one
  watcher.join(120)
  assert not watcher.is_alive()
  assert result["steps"] == [1, 2]
  for step, model in written.items():
    assert seen[step][0] == pytest.approx(param_sum(model), rel=1e-6)  # that checkpoint's params
    assert seen[step][1].endswith(os.path.join("checkpoints", str(step)))


def test_watch_skips_checkpoints_already_reported(tmp_path, config):
  workdir = str(tmp_path)
  testing.write_checkpoint(config, workdir, 4)
  os.makedirs(tmp_path / "eval" / "steps")
  with open(tmp_path / "eval" / "steps" / "step_000000004.json", "w") as f:
    json.dump({"step": 4}, f)
  evaluator = evaluator_lib.Evaluator(config, workdir, tasks=[], load_data=False)
  evaluator.evaluate_model = lambda *a, **k: pytest.fail("step 4 was evaluated already")
  assert evaluator.watch(interval_s=0.05, timeout_s=0.3) == []


def test_a_checkpoint_of_another_model_is_refused(tmp_path, config):
  testing.write_checkpoint(config, str(tmp_path), 1)
  other = testing.tiny_config()
  other.model.embed_dim = 48
  other.vocab.text_vocab_size = 256
  evaluator = evaluator_lib.Evaluator(other, str(tmp_path), tasks=[], load_data=False)
  with pytest.raises(EvaluationError, match=r"trained with a different model .*model\.embed_dim: trained 32, "
                                            r"requested 48; vocab\.text_vocab_size: trained 512, requested 256"):
    evaluator.evaluate_checkpoint()
  # Settings that only change how the model runs are fine.
  runtime = testing.tiny_config()
  runtime.model.dropout_rate, runtime.model.scan_layers = 0.3, True
  assert options.config_mismatches(json.loads(runtime.to_json()), config) == []


def test_workdir_without_checkpoints_and_missing_step(tmp_path, config):
  evaluator = evaluator_lib.Evaluator(config, str(tmp_path / "run"), tasks=[], load_data=False)
  with pytest.raises(EvaluationError, match=r"no checkpoint in .*run/checkpoints \(.*run does not exist\); "
                                            r"train first"):
    evaluator.evaluate_checkpoint()
  testing.write_checkpoint(config, str(tmp_path / "run"), 2)
  with pytest.raises(EvaluationError, match=r"no checkpoint of step 9 .*there are steps \[2\]"):
    evaluator.evaluate_checkpoint(9)


@pytest.fixture(scope="module")
def pole_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("pole_data")
  data_testing.build_control_dataset(data_dir, data_testing.cartpole_like_spec(), {"train": 2, "validation": 1})
  return str(data_dir)


def test_demonstrations_read_in_pieces_equal_one_read():
  """Episodes are read in pieces of the step limit (one batch of 1 << 20 steps asked TF for 28 GB on
  Atari frames): joined, the pieces are the episode, nested fields and text included."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps = tf.data.Dataset.from_tensor_slices({
      "observation": {"image": np.arange(7 * 4, dtype=np.uint8).reshape(7, 2, 2), "mission": [b"go"] * 7},
      "reward": np.linspace(0, 1, 7, dtype=np.float32)})
  whole, pieces = datasets.read_steps(steps, 100), datasets.read_steps(steps, 3)
  assert len(whole["reward"]) == 7
  for (path, x), (other, y) in zip(jax.tree_util.tree_flatten_with_path(whole)[0],
                                   jax.tree_util.tree_flatten_with_path(pieces)[0]):
    assert path == other
    np.testing.assert_array_equal(x, y)


def test_unknown_tasks_are_refused(pole_data_dir):
  config = testing.tiny_config()
  config.data.data_dir = pole_data_dir
  config.eval.tasks = "tiny_pole,not_a_task"
  with pytest.raises(EvaluationError, match=r"unknown task\(s\) \['not_a_task'\]: the control datasets in "
                                            r".*pole_data.* are tiny_pole \(build or import"):
    task_choice.resolve_tasks(config)


def test_gato_eval_reports_bad_input_in_one_line(tmp_path, pole_data_dir):
  proc = subprocess.run(
      [sys.executable, "-m", "gato_jax.evaluate", "--config", "experiments/tiny_demo.py",
       "--workdir", str(tmp_path), f"--config.data.data_dir={pole_data_dir}",
       "--config.eval.tasks=tiny_pole,not_a_game"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("gato-eval: unknown task(s) ['not_a_game']")


@pytest.mark.slow
def test_evaluate_a_checkpoint_end_to_end(tmp_path, config):
  """Tiny datasets of every demo domain and captions, a checkpoint, and the whole report."""
  import data_pipelines  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "data")
  for name, episodes in (("cartpole", 3), ("babyai_gotoredball", 4), ("metaworld_reach", 2), ("captions", 16)):
    data_pipelines.build(name, data_dir, episodes=episodes, validation_episodes=2, return_episodes=2)
  config = testing.tiny_config()
  config.data.data_dir = data_dir
  config.vocab.sentencepiece_model = testing.tiny_sentencepiece(str(tmp_path / "sp"))
  config.eval.tasks = "cartpole,babyai_gotoredball,metaworld_reach"
  workdir = str(tmp_path / "run")
  testing.write_checkpoint(config, workdir, 10)
  report = evaluator_lib.Evaluator(config, workdir).evaluate_checkpoint()
  assert report["step"] == 10
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    saved = json.load(f)
  assert set(saved["tasks"]) == {"cartpole", "babyai_gotoredball", "metaworld_reach"}
  for task in saved["tasks"].values():
    assert task["episodes"] == 2 and np.isfinite(task["normalized_score"])
    assert task["expert_return"] > task["random_return"]
  assert set(saved["summary"]["domains"]) == {"classic_control", "babyai", "metaworld"}
  assert set(saved["offline"]) == set(saved["tasks"]) and "action_accuracy" in saved["offline"]["cartpole"]
  assert set(saved["captions"]["modes"]) == {"greedy", "temperature_0.9"}
  for name in saved["tasks"]:
    gif = saved["files"].get(f"gif:{name}")
    assert gif and os.path.getsize(gif) > 0, f"no GIF for {name}"
  assert os.path.exists(saved["files"]["plot"]) and os.path.exists(saved["files"]["markdown"])
  # The same loop, seeds and normalisation give the data's expert about 1 and the random policy about 0.
  from gato_jax.evaluation import datasets, rollout, scores  # pylint: disable=g-import-not-at-top
  for name in ("cartpole", "metaworld_reach"):
    ds = datasets.load_control_dataset(name, data_dir)
    seeds = rollout.evaluation_seeds(ds.build_seed, 3)
    expert = rollout.run_episodes(ds.task, rollout.ExpertActor(ds.task), seeds, num_envs=3)
    score = scores.normalized_score(np.mean([r.episode_return for r in expert]), ds.expert_return,
                                    ds.random_return)
    assert 0.9 < score < 1.1, (name, score)
