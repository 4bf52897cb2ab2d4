"""Expert-normalised score arithmetic, intervals, per-domain summaries, caption scoring, and the report files."""

import json
import os

import numpy as np
import pytest

from gato_jax.evaluation import captions, report, scores


def test_normalized_score_arithmetic():
  assert scores.normalized_score(500.0, 500.0, 20.0) == pytest.approx(1.0)
  assert scores.normalized_score(20.0, 500.0, 20.0) == pytest.approx(0.0)
  assert scores.normalized_score(260.0, 500.0, 20.0) == pytest.approx(0.5)
  # Negative returns (Pendulum-like): expert -150, random -1200.
  assert scores.normalized_score(-675.0, -150.0, -1200.0) == pytest.approx(0.5)
  # Worse than random is negative, better than the expert above 1.
  assert scores.normalized_score(-1725.0, -150.0, -1200.0) == pytest.approx(-0.5)
  assert scores.normalized_score(740.0, 500.0, 20.0) == pytest.approx(1.5)
  np.testing.assert_allclose(scores.normalized_score([20.0, 140.0, 500.0], 500.0, 20.0), [0.0, 0.25, 1.0])


@pytest.mark.parametrize("expert,random_,pattern", [
    (10.0, 10.0, r"task 'x': expert_return=10.0 is not above random_return=10.0"),
    (5.0, 10.0, r"is not above random_return"),
    (float("nan"), 0.0, r"must be finite"),
])
def test_undefined_scores_are_refused(expert, random_, pattern):
  with pytest.raises(ValueError, match=pattern):
    scores.normalized_score(1.0, expert, random_, task="x")


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
  rng = np.random.default_rng(0)
  values = rng.normal(10.0, 2.0, 50)
  lo, hi = scores.bootstrap_interval(values, 0.95, 2000, seed=1)
  assert lo < values.mean() < hi
  # Close to the normal approximation mean +- 1.96 sd / sqrt(n).
  half = 1.96 * values.std() / np.sqrt(values.size)
  assert hi - lo == pytest.approx(2 * half, rel=0.2)
  assert scores.bootstrap_interval(values, 0.95, 2000, seed=1) == (lo, hi)
  assert scores.bootstrap_interval([3.0], 0.95) == (3.0, 3.0)
  wide = scores.bootstrap_interval(values, 0.99, 2000, seed=1)
  assert wide[0] <= lo and wide[1] >= hi


def test_task_score_and_summary():
  a = scores.TaskScore("cartpole", "classic_control", [500, 480, 460, 440], [500] * 4, 500.0, 20.0)
  b = scores.TaskScore("pendulum", "classic_control", [-600, -700], [200, 200], -150.0, -1200.0)
  c = scores.TaskScore("babyai_gotoredball", "babyai", [0.9, 0.0, 0.9, 0.0], [5, 64, 6, 64], 0.9, 0.1, crashed=1)
  results = {s.task: s.to_dict() for s in (a, b, c)}
  r = results["cartpole"]
  assert r["normalized_score"] == pytest.approx((470 - 20) / 480)
  assert r["mean_return"] == 470 and r["expert_return"] == 500 and r["random_return"] == 20
  assert r["episodes"] == 4 and r["score_ci_low"] <= r["normalized_score"] <= r["score_ci_high"]
  assert results["babyai_gotoredball"]["crashed_episodes"] == 1
  summary = scores.summarize(results)
  expected = {"cartpole": (470 - 20) / 480, "pendulum": (-650 + 1200) / 1050, "babyai_gotoredball": (0.45 - 0.1) / 0.8}
  assert summary["num_tasks"] == 3
  assert summary["domains"]["classic_control"]["mean_normalized_score"] == pytest.approx(
      (expected["cartpole"] + expected["pendulum"]) / 2)
  assert summary["domains"]["babyai"]["tasks"] == 1
  assert summary["tasks_above"] == {"0.5": 2, "0.8": 1}  # 0.94 and 0.52 above 50%; only 0.94 above 80%
  assert summary["mean_normalized_score"] == pytest.approx(np.mean(list(expected.values())))


def test_interquartile_mean():
  assert scores.interquartile_mean([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)
  assert scores.interquartile_mean([2.0]) == 2.0


def test_caption_parsing_and_scoring():
  colors, shapes, counts = ["red", "blue", "green"], ["circle", "square"], {1: "a", 2: "two", 3: "three"}
  parse = lambda s: captions.parse_caption(s, colors, shapes, counts)
  assert parse("a red circle and two blue squares") == [(1, "red", "circle"), (2, "blue", "square")]
  assert parse("Two green circles.") == [(2, "green", "circle")]
  assert parse("operand operand") == []
  truth = [(1, "red", "circle"), (2, "blue", "square")]
  assert captions.score_caption(parse("two blue squares and a red circle"), truth) == {
      "exact_match": 1.0, "attribute_match": 1.0}
  partial = captions.score_caption(parse("a red square"), truth)
  assert partial["exact_match"] == 0.0
  # red circle: best match "a red square" shares count and colour (2/3); blue squares: shape (1/3).
  assert partial["attribute_match"] == pytest.approx((2 / 3 + 1 / 3) / 2)
  assert captions.score_caption([], truth)["attribute_match"] == 0.0
  extra = captions.score_caption(parse("a red circle and two blue squares and a green circle"), truth)
  assert extra["attribute_match"] == pytest.approx(2 / 3)  # the extra group counts as a miss


def fake_report(step, shift=0.0):
  tasks = {
      "cartpole": scores.TaskScore("cartpole", "classic_control", [400 + shift, 300], [400, 300], 500, 20).to_dict(),
      "metaworld_reach": scores.TaskScore("metaworld_reach", "metaworld", [800, 900 + shift], [150, 150], 1300,
                                          200).to_dict(),
  }
  return {"step": step, "checkpoint": f"/w/checkpoints/{step}", "workdir": "/w", "tasks": tasks,
          "summary": scores.summarize(tasks),
          "offline": {"cartpole": {"loss": 0.7, "action_accuracy": 0.81, "target_tokens": 120}},
          "captions": {"modes": {"greedy": {"exact_match": 0.25, "attribute_match": 0.6, "examples": 4}},
                       "examples": [{"truth": "a red circle", "greedy": "a red square"}]}}


def test_report_files(tmp_path):
  workdir = str(tmp_path)
  first = fake_report(100)
  report.write_report(first, workdir)
  second = fake_report(200, shift=50)
  files = report.write_report(second, workdir)
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 200
  for task in ("cartpole", "metaworld_reach"):
    for key in ("normalized_score", "mean_return", "expert_return", "random_return", "episodes"):
      assert key in saved["tasks"][task]
  assert [r["step"] for r in report.load_history(workdir)] == [100, 200]
  md = open(files["markdown"]).read()
  assert "| cartpole | classic_control | 0.74 |" in md  # ((450 + 300) / 2 - 20) / 480
  assert "| **all** | 2 |" in md and "action accuracy" in md and "attribute match" in md
  with open(files["plot"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  events = os.listdir(os.path.join(workdir, "tensorboard", "eval"))
  assert events and all(e.startswith("events.out.tfevents") for e in events)
