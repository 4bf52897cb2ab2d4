"""`gato-eval --server=URL`: a served checkpoint gets the same scores as the in-process evaluation of the
same checkpoint on the same seeds, and an unreachable server is one line."""

import os
import subprocess
import sys

import pytest

import data_pipelines
from gato_jax.evaluation import evaluator as evaluator_lib
from gato_jax.serving import remote
from testlib import eval_testing as testing
from testlib import serving_testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  data_pipelines.build("cartpole", path, episodes=3, validation_episodes=2, return_episodes=2)
  return path


@pytest.mark.slow  # builds a dataset, starts a server, two evaluations
def test_served_scores_equal_in_process_scores(tmp_path, data_dir):
  config = testing.tiny_config()
  config.data.data_dir = data_dir
  config.eval.update(tasks="cartpole", episodes_per_task=4, num_envs=2, max_steps=40, greedy=True, offline=False,
                     gif=False, captions=0)
  workdir = str(tmp_path / "run")
  testing.write_checkpoint(config, workdir, 7, seed=2)
  in_process = evaluator_lib.Evaluator(config, workdir).evaluate_checkpoint()

  served = serving_testing.start(workdir, str(tmp_path), "--greedy")
  try:
    report = remote.evaluate_served(evaluator_lib.Evaluator(config, str(tmp_path / "served_run")), served.url,
                                    timeout_s=60)
  finally:
    assert served.stop() == 0, served.output()[-2000:]
  assert report["step"] == 7
  ours, theirs = report["tasks"]["cartpole"], in_process["tasks"]["cartpole"]
  assert ours["seeds"] == theirs["seeds"] and len(ours["seeds"]) == 4
  for key in ("returns", "mean_return", "normalized_score", "score_ci_low", "score_ci_high"):
    assert ours[key] == theirs[key], key
  assert len(set(theirs["returns"])) > 1  # CartPole's return is its length: the actions differed


@pytest.mark.slow  # builds a dataset
def test_an_unreachable_server_is_one_line(tmp_path, data_dir):
  proc = subprocess.run([sys.executable, "-m", "gato_jax.evaluate", "--config=experiments/tiny_demo.py",
                         f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={data_dir}",
                         "--config.eval.tasks=cartpole", "--config.eval.offline=False", "--config.eval.captions=0",
                         "--server=http://127.0.0.1:9"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
  assert proc.returncode == 1, proc.stderr[-2000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("gato-eval: gato-serve at http://127.0.0.1:9 is not reachable"), proc.stderr[-2000:]
