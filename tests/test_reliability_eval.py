"""Issue #25, items 6-7 for gato-eval: a task whose expert return equals its random return, and a
registered task whose dataset is not built, each end in one line (not a traceback, not "unknown")."""

import os
import subprocess
import sys

import pytest

import test_training_support as support

pytestmark = pytest.mark.slow
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": support.REPO}
# gato-eval as users run it, with the evaluation itself replaced by the scoring of a task whose
# metadata has expert_return == random_return (what a build can accept).
FLAT_TASK = """
import sys
from gato_jax.evaluation import evaluator, scores
class Flat:
  def __init__(self, config, workdir): pass
  def evaluate_checkpoint(self, step): scores.normalized_score(3.0, 5.0, 5.0, "flat_task")
evaluator.Evaluator = Flat
from gato_jax import evaluate
sys.argv = ["gato-eval"] + sys.argv[1:]
evaluate.run()
"""


def _last_line(result):
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert lines and sum(line.startswith("gato-eval: ") for line in lines) == 1, result.stderr[-3000:]
  return lines[-1]


def test_a_task_whose_expert_return_equals_its_random_return_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-c", FLAT_TASK, "--config=tests/test_training_support.py",
                           f"--workdir={tmp_path}"], capture_output=True, text=True, env=ENV,
                          cwd=support.REPO, timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  line = _last_line(result)
  assert "task 'flat_task': expert_return=5.0 is not above random_return=5.0" in line, line
  assert f"(details: {tmp_path / 'logs'}" in line


def test_a_registered_but_unbuilt_task_is_not_called_unknown(tmp_path):
  (tmp_path / "data").mkdir()
  result = subprocess.run([sys.executable, "-m", "gato_jax.evaluate", "--config=tests/test_training_support.py",
                           f"--workdir={tmp_path / 'run'}", "--config.eval.tasks=cartpole",
                           f"--config.data.data_dir={tmp_path / 'data'}"], capture_output=True, text=True,
                          env=ENV, cwd=support.REPO, timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  line = _last_line(result)
  assert "registered but not built" in line and "unknown" not in line, line
  assert f"gato-data build --data_dir={tmp_path / 'data'} --dataset=cartpole" in line, line
