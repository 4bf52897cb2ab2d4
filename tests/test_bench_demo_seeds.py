"""bench/demo_seeds.py's verdicts: every task must reach its target, on the score or on the interval."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import demo_seeds  # noqa: E402


def _row(cartpole=(0.9, 0.85), code=0, seconds=600.0):
  tasks = {name: {"normalized_score": 0.7, "score_ci_low": 0.6, "score_ci_high": 0.8, "target": target}
           for name, target in demo_seeds.TARGETS.items()}
  tasks["cartpole"].update(normalized_score=cartpole[0], score_ci_low=cartpole[1], score_ci_high=0.95)
  return {"seed": 1, "exit_code": code, "seconds": seconds, "tasks": tasks if code == 0 else {}}


def test_a_seed_passes_only_when_every_task_reaches_its_target():
  assert demo_seeds.passes(_row(), "normalized_score") and demo_seeds.passes(_row(), "score_ci_low")
  assert demo_seeds.passes(_row((0.85, 0.75)), "normalized_score")
  assert not demo_seeds.passes(_row((0.85, 0.75)), "score_ci_low")  # the interval dips below 0.8
  assert not demo_seeds.passes(_row((0.79, 0.7)), "normalized_score")
  assert not demo_seeds.passes(_row(code=2), "normalized_score")  # a failed demo passes nothing


def test_the_table_names_every_seed_and_failure():
  result = {"machine": "x", "load_start": [1], "load_end": [2], "rows": [_row(), {**_row(code=2), "seed": 2}]}
  text = demo_seeds.markdown(result)
  lines = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
  assert lines[0].startswith("| 1 | 0.90 [0.85, 0.95] | 0.70 [0.60, 0.80]") and lines[0].endswith("| yes | yes |")
  assert "failed" in lines[1] and lines[1].endswith("| no | no |")
