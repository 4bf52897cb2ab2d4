"""bench/pixels_steer.py end to end at tiny counts: the camera-only reacher and its state twin built,
trained and scored with intervals; JSON and markdown agree."""

import json
import math
import os
import subprocess
import sys

import pytest

import test_training_support as support

TASKS = ["dmc_reacher_easy_pixels", "dmc_reacher_easy"]


@pytest.mark.study  # ~3 min on the 2-core machine: rendered episodes, 2 short trainings (`make test-studies`)
def test_pixels_steer_runs_end_to_end_at_tiny_counts(tmp_path):
  out = tmp_path / "out"
  command = [
      sys.executable, os.path.join(support.REPO, "bench", "pixels_steer.py"),
      "--config", os.path.join(support.REPO, "experiments", "pixels_steer.py"),
      f"--workdir={tmp_path / 'run'}", f"--out={out}", f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.study.data=dmc_reacher_easy*=3/2/2", "--config.study.small.steps=6",
      "--config.eval.episodes_per_task=2", "--config.eval.num_envs=2",
  ]
  done = subprocess.run(command, capture_output=True, text=True, cwd=support.REPO, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((out / "pixels_steer.json").read_text())
  markdown = (out / "pixels_steer.md").read_text()
  assert list(result["tasks"]) == TASKS and result["config"]["steps"] == 6
  for name in TASKS:
    entry = result["tasks"][name]
    score = entry["score"]
    assert entry["run"]["steps"] == 6 and math.isfinite(entry["run"]["final_loss"])
    assert score["episodes"] == 2 and score["mean_length"] == 50  # the task's own episodes, uncapped
    assert score["score_ci_low"] <= score["normalized_score"] <= score["score_ci_high"]
    assert score["expert_return"] > score["random_return"]  # from the built data: the expert reaches
    assert f"| `{name}` |" in markdown and f"{score['normalized_score']:.2f} [" in markdown
