"""bench/train_step.py end to end on the tiny preset at a short length: the JSON it writes is complete and sane."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.study  # ~85 s on the 2-core machine: a subprocess, four compiles, two traced steps
def test_train_step_bench_writes_sane_results(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--presets=tiny_demo",
         "--batch_sizes=tiny_demo:4", "--length=64", "--warmup=1", "--steps=1", "--matmul_sizes=256",
         "--ablate=tiny_demo", "--ablations=attention_impl", f"--out_dir={tmp_path}",
         "--input_pipeline=" + os.path.join(ROOT, "bench", "results", "input_pipeline.json")]
  subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=600)
  with open(tmp_path / "train_step.json") as f:
    result = json.load(f)
  assert {"processor", "cpus", "jax", "device_kind", "load_average"} <= set(result["machine"])
  rows = {row["variant"]: row for row in result["rows"]}
  assert "error" not in str(result["rows"]), result["rows"]
  assert {"preset", "preset, 8 fake devices (2x2x2)", "cpu", "attention_impl=xla (dense causal)"} <= set(rows)
  for row in rows.values():
    for key in ("steps_per_s", "tokens_per_s", "flops_per_step", "flop_per_s", "peak_flop_per_s",
                "compile_s", "step_s"):
      assert row[key] > 0, (row["variant"], key, row[key])
    assert 0 < row["mfu"] < 1.5, row
    assert row["finite"], row
    assert abs(row["tokens_per_s"] * row["step_s"] - row["batch_size"] * row["length"]) < 1e-6
  assert rows["preset, 8 fake devices (2x2x2)"]["devices"] == 8
  assert "cpu_row_step_s" in rows["attention_impl=xla (dense causal)"]
  for peak in result["matmul_peaks"].values():
    assert all(v > 0 for v in peak["before"].values()) and all(v > 0 for v in peak["after"].values())
  profile = result["profiles"]["cpu"]
  assert profile["op_time_s"] > 0 and abs(sum(s for _, s in profile["categories"]) - 1) < 1e-6
  text = (tmp_path / "train_step.md").read_text()
  assert "| tiny_demo | preset |" in text and "MFU" in text and "## Profile" in text


def test_peer_bench_without_torch_says_so_and_exits_0(tmp_path):
  """torch / transformers live in the `bench` extra: without them the peer bench explains, not fails."""
  code = ("import runpy, sys; sys.modules['torch'] = None; "
          f"sys.argv = ['peer_torch.py', '--out={tmp_path}']; "
          "runpy.run_path('bench/peer_torch.py', run_name='__main__')")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "needs torch and transformers" in out.stdout and "Nothing measured" in out.stdout
  assert not list(tmp_path.iterdir())


@pytest.mark.study  # torch.compile of a tiny GPT-Neo: about a minute on the 2-core machine
def test_peer_bench_rows_take_turns_and_write_the_table(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  cmd = [sys.executable, os.path.join(ROOT, "bench", "peer_torch.py"), "--batches=2", "--seq_length=128",
         "--preset=tiny_demo", "--shape=layers=2,width=128,heads=4,mlp=512,vocab=2048,window=64",
         "--peak_sizes=256", "--block_steps=2", "--repeats=2", f"--out={tmp_path}",
         "--groups=jax:no_images+jax:images+torch:eager+torch:compile"]
  subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=900)
  with open(tmp_path / "peer_torch.json") as f:
    rows = {r["name"]: r for r in json.load(f)["rows"]}
  assert set(rows) == {"jax no_images", "jax images", "torch compile", "torch eager"}, rows
  for row in rows.values():
    assert "error" not in row, row
    assert len(row["timed_steps_s"]) == 2 and row["tokens_per_s"] > 0 and 0 < row["mfu"]
  assert set(rows["torch compile"]["peak_paths"]) == {"aten", "onednn"}
  assert rows["jax images"]["image_tokens_per_row"] > 0 and rows["jax no_images"]["image_tokens_per_row"] == 0
  text = (tmp_path / "peer_torch.md").read_text()
  assert "| 2 x 128 | 1 | jax no_images |" in text and "vs best peer" in text
