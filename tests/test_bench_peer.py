"""bench/peer_torch.py's protocol: rows take turns in blocks, the step after another row's turn is never timed."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import allocators, peer_rows  # noqa: E402  (flag-free: peer_torch's flags stay in its own process)


def test_the_step_after_a_gap_is_reported_apart_and_never_timed():
  # A row slowed after each idle gap (21 s) and fast back to back (15-16 s), as measured on this VM.
  figures = peer_rows.summarize_blocks([[21.0, 15.5, 15.0], [20.0, 16.0, 15.2]])
  assert figures["step_s"] == 15.0
  assert figures["timed_steps_s"] == [15.5, 15.0, 16.0, 15.2]
  assert figures["median_step_s"] == pytest.approx(15.35)
  assert figures["first_after_gap_s"] == pytest.approx(20.5)
  assert figures["gap_cost"] == pytest.approx(20.5 / 15.35)


def test_blocks_of_one_step_time_every_step():
  figures = peer_rows.summarize_blocks([[21.0], [20.0]])
  assert figures["step_s"] == 20.0 and figures["first_after_gap_s"] is None and figures["gap_cost"] is None


@pytest.mark.slow  # ~1 min: two JAX rows in their own processes, a compile each
def test_two_rows_take_turns_in_blocks_and_write_the_table(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, os.path.join(ROOT, "bench", "peer_torch.py"), "--preset=tiny_demo", "--batches=2",
         "--seq_length=64", "--peak_sizes=128", "--block_steps=2", "--repeats=2",
         "--groups=jax:no_images+jax:images", f"--out={tmp_path}", "--name=peer"]
  subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=600)
  result = json.loads((tmp_path / "peer.json").read_text())
  assert result["allocator"] == "system"  # glibc as it comes unless --allocator says otherwise
  rows = {r["name"]: r for r in result["rows"]}
  assert set(rows) == {"jax no_images", "jax images"}, result["rows"]
  for r in rows.values():
    assert [len(b) for b in r["blocks_s"]] == [2, 2]
    assert r["timed_steps_s"] == [b[1] for b in r["blocks_s"]]
    assert r["step_s"] == min(r["timed_steps_s"]) and r["first_after_gap_s"] > 0
    assert r["peak_path"] == "xla" and 0 < r["mfu"] < 1.5 and r["group"] == 1
  assert rows["jax images"]["image_tokens_per_row"] > 0
  table = (tmp_path / "peer.md").read_text()
  assert "| jax images |" in table and "first after gap" in table


def test_an_allocator_is_preloaded_alone_or_before_the_callers_own(monkeypatch):
  monkeypatch.setattr(allocators, "find", lambda name: f"/lib/{name}.so")
  monkeypatch.setenv("LD_PRELOAD", "/lib/mine.so")
  assert allocators.env("system") == {}
  assert allocators.env("tcmalloc") == {"LD_PRELOAD": "/lib/tcmalloc.so /lib/mine.so"}
  assert allocators.env("jemalloc")["LD_PRELOAD"] == "/lib/jemalloc.so /lib/mine.so"
  assert "dirty_decay_ms" in allocators.env("jemalloc")["MALLOC_CONF"]
  assert allocators.env("glibc_heap")["MALLOC_MMAP_MAX_"] == "0"  # glibc told never to mmap: no preload


def test_an_unknown_row_is_refused_in_one_line():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peer_torch.py"), "--groups=jax:pictures"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert "jax:pictures: expected jax:{no_images,images}" in proc.stderr, proc.stderr[-500:]
