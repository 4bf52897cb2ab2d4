"""The idle-gap artefact, shown and gone: gato-jax's train step back to back and after an idle gap, per malloc.

    python bench/allocator_probe.py                      # gato_79m, batch 4 x 1024, ~10 minutes
    python bench/allocator_probe.py --allocators=system,glibc_heap --gap_s=20

Each allocator (bench/allocators.py) gets its own process, which builds the JAX row of
bench/peer_torch.py (bench/peer_rows.jax_row), warms up, takes --steps steps back to back, sleeps
--gap_s seconds and takes one more. With glibc as it comes the step after the gap is the slow one
(each freed buffer over 32 MB went back to the kernel, and this VM hands idle pages to its host);
with a malloc that keeps its memory it is not. Writes allocator_probe.{json,md} with each process's
peak resident memory.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import allocators, peer_rows, results_io  # noqa: E402  (the repository root is on sys.path now)

_ALLOCATORS = flags.DEFINE_list("allocators", ["system", "glibc_heap", "tcmalloc", "jemalloc"],
                                "mallocs to compare (those not installed are skipped and say so)")
_ROW = flags.DEFINE_enum("row", "no_images", list(peer_rows.JAX_ROWS), "the JAX row of bench/peer_torch.py")
_PRESET = flags.DEFINE_string("preset", "gato_79m", "experiments/<name>.py")
_OVERRIDES = flags.DEFINE_list("jax_overrides", ["dtype=float32", "remat_policy=none", "dropout_rate=0.0",
                                                 "scan_layers=False", "fused_projections=True"],
                               "config.model keys (bench/peer_torch.py's)")
_BATCH = flags.DEFINE_integer("batch_size", 4, "sequences per step")
_LENGTH = flags.DEFINE_integer("seq_length", 1024, "sequence length L")
_STEPS = flags.DEFINE_integer("back_to_back_steps", 3, "steps back to back after the warm-up")
_GAP = flags.DEFINE_float("gap_s", 20.0, "idle seconds before the last step")
_CHILD = flags.DEFINE_bool("child", False, "internal: measure in this process")
_OUT = flags.DEFINE_string("out", "bench/results", "where allocator_probe.{json,md} go")
_TAG = "PROBE "


def measure() -> dict:
  step, _ = peer_rows.jax_row(_ROW.value, _BATCH.value, _LENGTH.value, _PRESET.value, _OVERRIDES.value, [])
  warmup_s = peer_rows.timed(step)
  back_to_back = [peer_rows.timed(step) for _ in range(_STEPS.value)]
  time.sleep(_GAP.value)
  after_gap = peer_rows.timed(step)
  return dict(warmup_s=warmup_s, back_to_back_s=back_to_back, after_gap_s=after_gap,
              max_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)


def markdown(result: dict) -> str:
  lines = ["# The idle-gap artefact per malloc (bench/allocator_probe.py)", "",
           f"Machine: {result['machine']}; `uptime` at the start: {result['uptime']}. Command: `{result['command']}`. "
           f"gato-jax's train step ({result['row']} row of bench/peer_torch.py), one process per malloc: a "
           f"warm-up step, {result['steps']} steps back to back, {result['gap_s']:.0f} s idle, one more step.", "",
           "| malloc | warm-up s | back to back s | best | after the idle gap s | after gap / best | peak resident GB |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
  for name, r in result["rows"].items():
    if "error" in r:
      lines.append(f"| {name} | {r['error']} ||||||")
      continue
    best = min(r["back_to_back_s"])
    lines.append(f"| {name} | {r['warmup_s']:.2f} | {', '.join(f'{t:.2f}' for t in r['back_to_back_s'])} | "
                 f"{best:.2f} | {r['after_gap_s']:.2f} | {r['after_gap_s'] / best:.2f}x | {r['max_rss_gb']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if _CHILD.value:
    print(_TAG + json.dumps(measure()), flush=True)
    return
  unknown = sorted(set(_ALLOCATORS.value) - {"system", *allocators.ALLOCATORS})
  if unknown:
    raise app.UsageError(f"--allocators: {unknown}: expected some of system,{','.join(allocators.ALLOCATORS)}")
  uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "uptime": uptime, "row": _ROW.value,
            "steps": _STEPS.value, "gap_s": _GAP.value, "rows": {},
            "command": "python " + " ".join(["bench/allocator_probe.py", *sys.argv[1:]])}
  for name in _ALLOCATORS.value:
    if name != "system" and not allocators.find(name):
      result["rows"][name] = {"error": f"not installed (Debian: apt-get install {allocators.ALLOCATORS[name][2]})"}
      continue
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **allocators.env(name))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    line = next((l for l in proc.stdout.splitlines() if l.startswith(_TAG)), None)
    result["rows"][name] = (json.loads(line[len(_TAG):]) if line else
                            {"error": f"exit {proc.returncode}{' (the OOM killer)' if proc.returncode == -9 else ''}: "
                                      f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:200]}"})
    print(name, result["rows"][name], flush=True)
  results_io.write_results(_OUT.value, "allocator_probe", result, markdown(result))


if __name__ == "__main__":
  app.run(main)
