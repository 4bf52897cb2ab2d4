"""Issue #14's chaos soak at CI size: launch/chaos_soak.py with a couple of kills (its defaults, 12
kills over 200 steps, are the long version: `python -m launch.chaos_soak --workdir /tmp/soak`)."""

import os
import subprocess
import sys

import pytest

import test_training_support as support

pytestmark = pytest.mark.slow
pytest.importorskip("gymnasium")  # the soak builds CartPole with the real builder


def test_chaos_soak_resumes_exactly_on_the_same_mesh_and_closely_on_others(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "launch.chaos_soak", f"--workdir={tmp_path}", "--kills=2", "--fixed_mesh_kills=1",
       "--steps=16", "--checkpoint_every=3", "--save_kill_fraction=0.5", "--seed=3"],
      cwd=support.REPO, env={**os.environ, "PYTHONPATH": support.REPO}, capture_output=True, text=True,
      timeout=1200)
  out = result.stdout
  assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
  lines = [line for line in out.splitlines() if line.startswith("segment ")]
  assert len(lines) == 3 and "bitwise" in lines[1] and "ended by none, status 0" in lines[2], out
  assert "chaos_soak: 2 kills" in out and out.rstrip().endswith("OK"), out
