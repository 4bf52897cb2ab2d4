"""The generalist study end to end at tiny counts: data built, capped references, the generalist and one
specialist per domain (and the language one) at two sizes, simulator scores, JSON / markdown / plot."""

import json
import math
import os
import subprocess
import sys

import pytest

import test_training_support as support

DOMAINS = {"babyai": ["babyai_gotoredball", "babyai_gotolocal"], "classic": ["cartpole"]}


@pytest.mark.study  # ~7 min on the 2-core machine: 8 short trainings (`make test-studies`)
def test_the_generalist_study_runs_end_to_end_at_tiny_counts(tmp_path):
  out, data = tmp_path / "out", tmp_path / "data"
  steps = {"small": 8, "large": 6}
  command = [
      sys.executable, os.path.join(support.REPO, "bench", "generalist.py"),
      "--config", os.path.join(support.REPO, "experiments", "generalist_study.py"),
      f"--workdir={tmp_path / 'study'}", f"--out={out}", f"--config.data.data_dir={data}",
      "--config.study.domains=" + ";".join(f"{d}={','.join(ts)}" for d, ts in DOMAINS.items()),
      "--config.study.data=text=0/0/0,captions=8/8/0,*=3/2/2",  # captions: 2 validation batches of 4
      f"--config.study.small.steps={steps['small']}", f"--config.study.large.steps={steps['large']}",
      "--config.study.large.num_layers=3", "--config.study.large.embed_dim=192",
      "--config.study.large.num_heads=6", "--config.study.large.mlp_dim=768",
      # CartPole's 500-step episodes capped at 60: scored against expert / random at the same cap.
      "--config.study.max_steps=60",
      "--config.eval.episodes_per_task=2", "--config.eval.num_envs=2", "--config.eval.offline_batches=1",
      "--config.eval.offline_batch_size=4",
  ]
  done = subprocess.run(command, capture_output=True, text=True, cwd=support.REPO, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((out / "generalist.json").read_text())
  markdown = (out / "generalist.md").read_text()
  assert result["domains"] == DOMAINS
  # Every task whose episodes may run past the cap (CartPole 500, BabyAI's task limit 1000) is capped and
  # scored against its expert and random policies at the cap: the LQR expert balances all 60 steps.
  assert set(result["references"]) == {"cartpole", "babyai_gotoredball", "babyai_gotolocal"}
  assert all(r["cap"] == 60 and r["task_max_steps"] > 60 for r in result["references"].values())
  ref = result["references"]["cartpole"]
  assert ref["expert_return"] == 60.0 and ref["random_return"] < 60 and ref["data_expert_return"] == 500.0
  control = [t for ts in DOMAINS.values() for t in ts]
  assert set(result["sizes"]) == {"small", "large"}
  for size, r in result["sizes"].items():
    gen = r["generalist"]
    assert r["steps"] == steps[size] and gen["run"]["steps"] == steps[size] and math.isfinite(gen["run"]["final_loss"])
    # Every task scored with an interval, by the generalist and by its domain's specialist.
    for d, ts in DOMAINS.items():
      for t in ts:
        for entry in (gen["tasks"][t], r["specialists"][d]["tasks"][t]):
          assert entry["episodes"] == 2 and math.isfinite(entry["normalized_score"])
          assert entry["score_ci_low"] <= entry["normalized_score"] <= entry["score_ci_high"]
    assert gen["tasks"]["cartpole"]["expert_return"] == 60.0 and gen["tasks"]["cartpole"]["capped_at"] == 60
    assert gen["tasks"]["cartpole"]["mean_length"] <= 60
    assert set(r["specialists"]["babyai"]["tasks"]) == set(DOMAINS["babyai"])  # a specialist plays its own
    # Specialist steps = generalist steps x the domain's share (85% control split evenly over the three
    # control tasks, 15% text + captions), computed here from the counts.
    expected = {d: 0.85 * len(ts) / len(control) for d, ts in DOMAINS.items()} | {"language": 0.15}
    for d, share in expected.items():
      spec = r["specialists"][d]
      assert spec["share"] == pytest.approx(share)
      assert spec["steps"] == spec["run"]["steps"] == max(1, round(steps[size] * share))
    assert r["specialists"]["classic"]["mixture"] == f"cartpole:{0.85 / 3:.6g}"
    # Per domain: IQM with its interval and the fraction above 0.5, for both; the overall row.
    for d in DOMAINS:
      for who in ("generalist", "specialist"):
        a = r["domains"][d][who]
        assert a["tasks"] == len(DOMAINS[d]) and a["iqm_ci_low"] <= a["iqm"] <= a["iqm_ci_high"]
        assert 0 <= a["fraction_above_half"] <= 1
    assert r["overall"]["generalist"]["tasks"] == len(control)
    # The validation loss on text and captions: generalist and language specialist.
    for who in (gen, r["specialists"]["language"]):
      assert math.isfinite(who["language"]["text"]["loss"]) and math.isfinite(who["language"]["captions"]["loss"])
    assert "tasks" not in r["specialists"]["language"] or not r["specialists"]["language"]["tasks"]
    # What the markdown reports comes from the JSON.
    small = result["sizes"]["small"]
    assert f"| babyai | 2 | {expected['babyai']:.3f} |" in markdown
    iqm = small["domains"]["babyai"]["generalist"]
    assert f"{iqm['iqm']:.2f} [{iqm['iqm_ci_low']:.2f}, {iqm['iqm_ci_high']:.2f}]" in markdown
    assert f"| {size} | generalist | {steps[size]} | {gen['language']['text']['loss']:.3f} |" in markdown
  assert "## Where the generalist falls behind" in markdown and "## Pixels that steer" in markdown
  assert "| cartpole (capped) | classic |" in markdown
  assert (out / "generalist.png").stat().st_size > 1000
  # The trainings were separate processes on the study's mixtures and sizes (their own config.json).
  runs = tmp_path / "study" / "runs"
  for size in steps:
    gen = json.loads((runs / size / "generalist" / "config.json").read_text())
    assert set(t.split(":")[0] for t in gen["data"]["mixture"].split(",")) == set(control) | {"text", "captions"}
    assert gen["num_train_steps"] == steps[size]
    spec = json.loads((runs / size / "classic" / "config.json").read_text())
    assert spec["data"]["mixture"].startswith("cartpole:") and "," not in spec["data"]["mixture"]
  assert json.loads((runs / "large" / "babyai" / "config.json").read_text())["model"]["embed_dim"] == 192
