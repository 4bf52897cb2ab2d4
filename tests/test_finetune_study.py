"""The few-shot study end to end at tiny counts: data built, pretraining without the held-out task,
fine-tuning from it and from scratch for each episode count, simulator scores, JSON / markdown / plot."""

import json
import math
import os
import subprocess
import sys

import pytest

import test_training_support as support


@pytest.mark.study  # ~2 min on the 2-core machine (4 on a slow one): `make test-studies`
def test_the_fewshot_study_runs_end_to_end_at_tiny_counts(tmp_path):
  out, data = tmp_path / "out", tmp_path / "data"
  command = [
      sys.executable, os.path.join(support.REPO, "bench", "fewshot.py"),
      "--config", os.path.join(support.REPO, "experiments", "fewshot_metaworld.py"),
      f"--workdir={tmp_path / 'study'}", f"--out={out}", f"--config.data.data_dir={data}",
      "--config.data.mixture=metaworld_push:1,metaworld_button_press:1",
      "--config.fewshot.episodes=1,2", "--config.fewshot.pretrain_episodes=2",
      "--config.fewshot.validation_episodes=2", "--config.num_train_steps=2",
      "--config.checkpoint_every_steps=2", "--config.log_every_steps=1", "--config.fewshot.finetune_steps=2",
      "--config.fewshot.warmup_steps=1", "--config.eval.episodes_per_task=2", "--config.eval.num_envs=2",
  ]
  done = subprocess.run(command, capture_output=True, text=True, cwd=support.REPO, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((out / "fewshot.json").read_text())
  assert result["held_out"] == "metaworld_reach" and "metaworld_reach" not in result["pretrain_mixture"]
  assert result["pretrain"]["steps"] == 2
  runs = {(r["init"], r["episodes"]): r for r in result["runs"]}
  assert set(runs) == {("pretrained", 0), ("pretrained", 1), ("scratch", 1), ("pretrained", 2), ("scratch", 2)}
  for run in runs.values():
    assert run["eval_episodes"] == 2 and math.isfinite(run["normalized_score"])
    assert run["score_ci_low"] <= run["normalized_score"] <= run["score_ci_high"]
  # Fine-tuning started from the pretrained parameters, from scratch did not; each read its N episodes.
  for (init, n), run in runs.items():
    if not n:
      continue
    log = (tmp_path / "study" / "runs" / f"{init}_{n}" / "train.log").read_text()
    assert ("init_from: started from the parameters of" in log) == (init == "pretrained")
    assert run["steps"] == 2 and math.isfinite(run["final_loss"])
  assert (data / "metaworld_reach").is_dir() and (tmp_path / "data_1" / "metaworld_reach").is_dir()
  assert "| 0 (zero-shot) |" in (out / "fewshot.md").read_text()
  assert (out / "fewshot.png").stat().st_size > 1000
