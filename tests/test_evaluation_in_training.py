"""Evaluation while training: config.evals read and refused in one line, validation curves in the
metrics JSON and TensorBoard, the best checkpoint kept and found by "best" (gato-eval, init_from), the
memorising warning, and (slow) the same training losses with and without in-training rollouts."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from gato_jax import checkpoint_files
from gato_jax.evaluation import checkpoints as eval_checkpoints, in_training, options
from gato_jax.training import evals as evals_lib, init_from, loop
from testlib import data_testing, eval_testing
import test_training_support as support


class ScriptedEvaluator:
  """A stand-in for an in-training evaluator: scores each step from a table (the loop's interface)."""
  name = "validation"

  def __init__(self, by_step):
    self.by_step, self.calls = by_step, []

  def due(self, step, last):
    return step in self.by_step

  def __call__(self, step, *, params, model_state, model_def, mesh):
    assert params is not None and model_def is not None and mesh is not None
    self.calls.append(step)
    return dict(self.by_step[step])


def test_the_evals_table_defaults_to_what_gato_eval_ran_plus_validation_in_training():
  config = support.get_config()
  config.eval.tasks = "cartpole"
  config.evals.rollouts.episodes_per_task = 3  # an entry overrides config.eval for itself alone
  specs = {s.name: s for s in options.eval_specs(config)}
  assert {n: (s.type, s.every_steps) for n, s in specs.items()} == {
      "validation": ("offline", -1), "rollouts": ("control", 0), "captions": ("captions", 0)}
  assert specs["rollouts"].options.episodes_per_task == 3
  assert specs["validation"].options.episodes_per_task == 50
  assert specs["validation"].options.tasks == ("cartpole",)
  assert specs["validation"].due(4, checkpoint_every_steps=2, last=False)
  assert not specs["validation"].due(3, checkpoint_every_steps=2, last=False)
  assert not specs["rollouts"].due(4, checkpoint_every_steps=2, last=True)
  del config.evals
  assert [s.name for s in options.eval_specs(config)] == list(options.default_evals())


@pytest.mark.parametrize("entry, message", [
    ({"type": "rollout"}, r"config.evals.bad.type='rollout'; expected one of \('offline', 'control', 'captions'\)"),
    ({"type": "control", "episodes": 3}, r"config.evals.bad has unknown key\(s\) \['episodes'\]"),
    ({"type": "control", "every_steps": -5}, r"config.evals.bad.every_steps=-5; expected -1"),
    ({"type": "control", "prompt": "demos"}, r"config.eval.prompt='demos'; expected one of"),
])
def test_a_bad_evals_entry_is_one_line_naming_the_key(entry, message):
  config = support.get_config()
  config.evals.bad = entry
  with pytest.raises(options.EvalConfigError, match=message):
    options.eval_specs(config)


def test_memorising_is_named_when_validation_rises_while_training_loss_falls(caplog):
  watch = evals_lib.MemorisingWatch(patience=2)
  history = [(2.0, 1.0, 1.0), (1.5, 1.1, 0.9), (1.0, 1.2, 0.8)]  # train loss, val loss of two tasks
  with caplog.at_level(logging.WARNING):
    flagged = [watch.update(t, {"validation/tiny_pole/loss": a, "validation/tiny_grid/loss": b,
                                "validation/loss": (a + b) / 2}) for t, a, b in history]
  assert flagged == [[], [], ["tiny_pole"]]
  assert "Validation loss of tiny_pole has risen for 2 evaluations (1.0000 -> 1.2000) while the training " \
         "loss fell (2.0000 -> 1.0000)" in caplog.text and "tiny_grid" not in caplog.text
  assert watch.update(1.6, {"validation/tiny_pole/loss": 1.3}) == []  # training loss rose too: not memorising


@pytest.mark.slow
def test_the_best_checkpoint_is_kept_beside_the_last_and_found_by_best(tmp_path, caplog):
  config = support.get_config()
  config.num_train_steps, config.checkpoint.keep_last = 6, 1
  config.checkpoint.best_metric = "validation/action_accuracy"
  config.eval.memorising_patience = 2
  scores = {2: {"validation/action_accuracy": 0.9, "validation/cartpole/loss": 1.0},
            4: {"validation/action_accuracy": 0.1, "validation/cartpole/loss": 1.1},
            6: {"validation/action_accuracy": 0.2, "validation/cartpole/loss": 1.2}}
  evaluator = ScriptedEvaluator(scores)
  workdir = str(tmp_path / "run")
  with caplog.at_level(logging.WARNING):
    loop.train(config, workdir, evaluators=[evaluator])
  assert evaluator.calls == [2, 4, 6]
  directory = os.path.join(workdir, "checkpoints")
  assert checkpoint_files.committed_steps(directory) == [2, 6]  # the last one and the best one
  assert checkpoint_files.best_step(directory, "validation/action_accuracy") == 2
  assert eval_checkpoints.find_checkpoint(workdir, "best").step == 2
  assert init_from.resolve(f"{workdir}@best")[0].name == "2"
  with open(os.path.join(workdir, "evals.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert [line["step"] for line in lines] == [2, 4, 6]
  assert lines[0]["validation/action_accuracy"] == 0.9 and lines[0]["train/loss"] > 0
  assert os.listdir(os.path.join(workdir, "tensorboard", "evals"))
  if lines[0]["train/loss"] > lines[-1]["train/loss"]:  # the synthetic data's loss falls over 6 steps
    assert "Validation loss of cartpole has risen for 2 evaluations" in caplog.text


def test_best_is_refused_in_one_line_for_a_run_without_best_metric(tmp_path):
  config = eval_testing.tiny_config()
  config.checkpoint.best_metric = ""
  workdir = str(tmp_path / "run")
  eval_testing.write_checkpoint(config, workdir, 2)
  with pytest.raises(ValueError, match="trained without config.checkpoint.best_metric"):
    eval_checkpoints.find_checkpoint(workdir, "best")
  with pytest.raises(init_from.InitFromError, match="records no checkpoint.best_metric"):
    init_from.resolve(f"{workdir}@best")


def _pole_config(data_dir):
  config = support.get_config()
  config.data.data_dir, config.data.mixture = data_dir, "tiny_pole:1"
  config.data.shuffle_buffer = 16
  config.num_train_steps, config.checkpoint_every_steps = 4, 2
  config.eval.offline_batches = 2
  return config


@pytest.fixture(scope="module")
def pole_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("pole_data")
  data_testing.build_control_dataset(data_dir, data_testing.cartpole_like_spec(), {"train": 4, "validation": 2})
  return str(data_dir)


@pytest.mark.slow
def test_validation_curves_reach_the_metrics_json_and_tensorboard(tmp_path, pole_data_dir):
  config = _pole_config(pole_data_dir)
  workdir = str(tmp_path / "run")
  evaluators = in_training.build(config, workdir)
  assert [e.name for e in evaluators] == ["validation"]  # rollouts and captions are off in training
  loop.train(config, workdir, evaluators=evaluators)
  with open(os.path.join(workdir, "evals.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert [line["step"] for line in lines] == [2, 4]
  for line in lines:
    assert 0.0 <= line["validation/tiny_pole/action_accuracy"] <= 1.0
    assert line["validation/tiny_pole/loss"] > 0 and line["validation/action_accuracy"] is not None
  events = os.listdir(os.path.join(workdir, "tensorboard", "evals"))
  assert events and all(os.path.getsize(os.path.join(workdir, "tensorboard", "evals", e)) for e in events)
  best = checkpoint_files.best_step(os.path.join(workdir, "checkpoints"), "validation/action_accuracy")
  # Orbax's ranking: the highest accuracy; among equal ones the later step.
  assert best == max(lines, key=lambda line: (line["validation/action_accuracy"], line["step"]))["step"]


@pytest.mark.slow
def test_in_training_rollouts_leave_the_training_stream_alone(tmp_path):
  """Rollouts every 2 steps (and validation) against validation alone: the same params and losses."""
  import data_pipelines  # pylint: disable=g-import-not-at-top  # builds a real simulator's dataset
  data_dir = str(tmp_path / "data")
  data_pipelines.build("cartpole", data_dir, episodes=3, validation_episodes=2, return_episodes=2)
  results, lines = {}, {}
  for rollouts in (True, False):
    config = support.get_config()
    config.data.data_dir, config.data.mixture, config.data.shuffle_buffer = data_dir, "cartpole:1", 16
    config.num_train_steps, config.checkpoint_every_steps, config.log_every_steps = 4, 2, 1
    config.eval.update(episodes_per_task=2, num_envs=2, max_steps=10, offline_batches=1)
    config.evals.rollouts.every_steps = 2 if rollouts else 0
    workdir = str(tmp_path / f"run_{rollouts}")
    evaluators = in_training.build(config, workdir)
    assert [e.name for e in evaluators] == (["rollouts", "validation"] if rollouts else ["validation"])
    results[rollouts] = loop.train(config, workdir, evaluators=evaluators)
    with open(os.path.join(workdir, "evals.jsonl")) as f:
      lines[rollouts] = [json.loads(line) for line in f]
  assert [line["step"] for line in lines[True]] == [2, 4]
  assert all(line["rollouts/cartpole/normalized_score"] is not None for line in lines[True])
  assert results[True].last_metrics["loss"] == results[False].last_metrics["loss"]
  for a, b in zip(jax.tree.leaves(support.params_to_numpy(results[True].state.params)),
                  jax.tree.leaves(support.params_to_numpy(results[False].state.params))):
    np.testing.assert_array_equal(a, b)
  assert [line["validation/cartpole/loss"] for line in lines[True]] == \
         [line["validation/cartpole/loss"] for line in lines[False]]
