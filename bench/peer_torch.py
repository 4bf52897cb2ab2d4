"""The PyTorch peer of the train-step bench: transformers' GPT-Neo at gato_79m's shape, side by side.

    python bench/peer_torch.py                  # batch 4 x 1024: each JAX row paired with the compiled peer
    python bench/peer_torch.py --groups=torch:eager+torch:compile+torch:max_autotune   # the peer's paths
    python bench/peer_torch.py --side=torch --row=compile --batch_size=4 < commands      # one row

The peer is the transformer JAT trains (transformers' GPTNeoForCausalLM): 8 layers, width 768, 24
heads, alternating global / local (window 256) attention, gelu_new MLP 3072, an untied 33,024-row
output layer; AdamW (b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1) after clipping the global gradient
norm to 1, dropout off, float32, as gato-jax's `cpu` row; eager, torch.compile, or torch.compile with
max-autotune (bench/peer_rows.py). It reads token ids only: JAT's image encoder is not part of it,
so gato-jax's image row pays for a patch ResNet the peer does not run.

Protocol. Each row runs in its own process, builds, warms up and measures its framework's matmul
peak (torch: every float32 path it has here, the best is the denominator); every process of a run
has the same malloc (--allocator, bench/allocators.py: glibc as it comes makes XLA:CPU page-fault
its large buffers in every step, torch far less). The rows of a group then
take turns in BLOCKS of --block_steps back-to-back steps, --repeats rounds (A-B-C-A-B-C). The first
step of a block follows the other rows' blocks, a long idle gap in which this VM hands the freed
memory back and the step pays it again as page faults (measured: ~21 s after a gap against 15-16 s
back to back for the same JAX step); it is reported apart ("first after gap") and never timed. A
row's step time is the best of its in-block steps (load only ever adds time), the median beside it;
ratios are taken within a group, whose rows shared every minute of load. FLOPs per step use the JAX
bench's convention for both (PaLM's 6N: 6 x non-embedding params x tokens + 12 x layers x width x L
x tokens for attention, no discount for causal or local masks + 6 x width x vocab x tokens for the
output layer). torch and transformers come from the `bench` extra (pip install -e ".[bench]", with
torch's CPU wheel); without them this says so and exits 0.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import allocators, peer_rows, results_io  # noqa: E402  (the repository root is on sys.path now)

_SIDE = flags.DEFINE_enum("side", "both", ["both", "torch", "jax"], "both: run each group's rows in subprocesses")
_BATCHES = flags.DEFINE_list("batches", ["4"], "sequences per step (--side=both)")
_BATCH = flags.DEFINE_integer("batch_size", 4, "sequences per step (one side)")
_LENGTH = flags.DEFINE_integer("seq_length", 1024, "sequence length L")
_WARMUP = flags.DEFINE_integer("warmup_steps", 1, "untimed steps after building (torch.compile compiles in the first)")
_BLOCK = flags.DEFINE_integer("block_steps", 3, "steps a row takes back to back in its turn; the first is "
                              "reported as 'first after gap' and not timed (1: every step timed, the "
                              "idle-gap artefact included)")
_REPEATS = flags.DEFINE_integer("repeats", 2, "rounds of blocks per group")
_SIZES = flags.DEFINE_list("peak_sizes", ["2048", "4096"], "sizes S of the [S, S] matmuls of the peak")
_ROW = flags.DEFINE_string("row", "compile", "one side's row: eager | compile | max_autotune (torch), "
                           "no_images | images (jax)")
_SHAPE = flags.DEFINE_list("shape", ["layers=8", "width=768", "heads=24", "mlp=3072", "vocab=33024",
                                     "window=256"], "the peer's shape (key=value)")
_PRESET = flags.DEFINE_string("preset", "gato_79m", "the JAX side's experiments/<name>.py")
_OVERRIDES = flags.DEFINE_list("jax_overrides", ["dtype=float32", "remat_policy=none", "dropout_rate=0.0",
                                                 "scan_layers=False", "fused_projections=True"],
                               "config.model keys of the JAX rows (equal settings with the peer, and "
                               "the layout this host runs fastest: bench/results/train_step_switches.md)")
_GROUPS = flags.DEFINE_list("groups", ["jax:no_images+torch:compile", "jax:images+torch:compile"],
                            "groups of side:row joined by '+': the rows of a group take turns block by block")
_OUT = flags.DEFINE_string("out", "bench/results", "where peer_torch.{json,md} go (--side=both)")
_NAME = flags.DEFINE_string("name", "peer_torch", "results file name (--side=both)")
_RELEASE = flags.DEFINE_bool("release_between_turns", False,
                              "hand a row's free memory back to the kernel after its warm-up and each turn "
                              "(rows that keep their memory: glibc_heap, tcmalloc)")
_ALLOCATOR = flags.DEFINE_enum("allocator", "system", ["system", *allocators.ALLOCATORS],
                               "malloc of every row's process, both sides alike (bench/allocators.py; "
                               "system: glibc as it comes, the idle-gap artefact included)")
_TAG = "PEER_ROW "  # prefix of the JSON line a side prints


def serve(side: str, row: str, batch_size: int, length: int):
  """One row in this process: build, warm up, then "block N" runs N steps back to back and prints
  their times; "done" prints the row."""
  started = time.perf_counter()
  if side == "torch":
    shape = {k: int(v) for k, v in (item.split("=", 1) for item in _SHAPE.value)}
    step, info = peer_rows.torch_row(row, batch_size, length, shape, _SIZES.value)
  else:
    step, info = peer_rows.jax_row(row, batch_size, length, _PRESET.value, _OVERRIDES.value, _SIZES.value)
  peak_fn = info.pop("peak_fn")
  info["peak_before"] = peak_fn()
  for _ in range(_WARMUP.value):
    step()
  info["build_and_warmup_s"] = time.perf_counter() - started
  if _RELEASE.value:
    allocators.release_free_memory()  # the next row builds while this one waits
  print("READY", flush=True)
  blocks, loss = [], None
  for line in sys.stdin:
    words = line.split()
    if len(words) != 2 or words[0] != "block":
      break
    times = []
    for _ in range(int(words[1])):
      started = time.perf_counter()
      loss = step()
      times.append(time.perf_counter() - started)
    blocks.append(times)
    if _RELEASE.value:
      allocators.release_free_memory()
    print("TIMES " + json.dumps(times), flush=True)
  if not blocks:
    sys.exit(f"bench/peer_torch.py: {side} {row}: no timed step (another row of the group failed)")
  info["peak_after"] = peak_fn()
  # The best matmul throughput of any path, before or after the steps: load only ever lowers it, and
  # a denominator measured in a burst of load would flatter the MFU.
  paths = {path: max(*info["peak_before"][path].values(), *info["peak_after"][path].values())
           for path in info["peak_before"]}
  best_path = max(paths, key=paths.get)
  figures = peer_rows.summarize_blocks(blocks)
  flop_per_s = info["flops_per_step"] / figures["step_s"]
  print(_TAG + json.dumps(dict(
      info, **figures, name=f"{side} {row}", batch_size=batch_size, length=length, blocks_s=blocks,
      tokens_per_s=batch_size * length / figures["step_s"], flop_per_s=flop_per_s, peak_paths=paths,
      peak_path=best_path, peak_flop_per_s=paths[best_path], mfu=flop_per_s / paths[best_path],
      loss=loss)), flush=True)


def _start(side: str, row: str, batch_size: int, allocator: str) -> subprocess.Popen:
  # One inductor compile thread: its default worker pool costs gigabytes this 2-core box lacks.
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", TORCHINDUCTOR_COMPILE_THREADS="1",
             **allocators.env(allocator))
  argv = [a for a in sys.argv[1:] if not a.startswith(("--side=", "--batch_size=", "--row="))]
  cmd = [sys.executable, os.path.abspath(__file__), f"--side={side}", f"--row={row}",
         f"--batch_size={batch_size}", *argv]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _read_until(proc: subprocess.Popen, prefix: str) -> str | None:
  for line in proc.stdout:
    if line.startswith(prefix):
      return line[len(prefix):].strip()
  return None


def _send(proc: subprocess.Popen, command: str) -> bool:
  """False where the row's process has died (its stderr says why)."""
  try:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return True
  except OSError:
    return False


def run_group(group: list, batch_size: int, allocator: str) -> list:
  """The rows of a group ((side, row) each) in their own processes, taking turns block by block.
  Built one after another: each build (torch.compile above all) has the machine to itself."""
  procs, failed = [], []
  for side, row in group:
    procs.append(_start(side, row, batch_size, allocator))
    if _read_until(procs[-1], "READY") is None:
      failed.append(procs[-1])
      break
  for _ in range(_REPEATS.value if not failed else 0):
    for p in procs:
      if not _send(p, f"block {_BLOCK.value}") or _read_until(p, "TIMES ") is None:
        failed.append(p)
        break
    if failed:
      break
  rows = []
  for (side, row), p in zip(group, procs + [None] * (len(group) - len(procs))):
    if p is not None and p not in failed and _send(p, "done"):
      line = _read_until(p, _TAG.strip())
      if line is not None:
        rows.append(json.loads(line))
        p.wait()
        continue
    error = "not started: an earlier row of the group failed"
    if p is not None:
      p.kill()
      p.wait()
      error = p.stderr.read()[-2000:] or f"no output (exit {p.returncode}: -9 is the OOM killer's)"
    rows.append({"name": f"{side} {row}", "batch_size": batch_size, "error": error})
  return rows


def parse_groups(items) -> list:
  groups = []
  for item in items:
    group = [tuple(part.split(":", 1)) for part in item.split("+")]
    for side, row in group:
      known = peer_rows.JAX_ROWS if side == "jax" else peer_rows.TORCH_MODES if side == "torch" else ()
      if row not in known:
        raise app.UsageError(f"--groups: {side}:{row}: expected jax:{{{','.join(peer_rows.JAX_ROWS)}}} or "
                             f"torch:{{{','.join(peer_rows.TORCH_MODES)}}}")
    groups.append(group)
  return groups


def _ratio(row: dict, peer: dict | None) -> str:
  return f"{row['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer else "-"


def markdown(result: dict) -> str:
  """One table: each row with its ratio to the best torch row of its own group."""
  lines = [
      "# gato-jax vs the PyTorch peer (GPT-Neo as JAT trains it), train step on this CPU", "",
      f"Machine: {result['machine']}. `uptime` at the start: {result['uptime_start']}; at the end: "
      f"{result['uptime_end']}. Written by `bench/peer_torch.py` ({result['command']}). malloc of "
      f"every row's process: {result['allocator']}.", "",
      f"Protocol: each row in its own process; the rows of a group take turns in blocks of "
      f"{result['block_steps']} back-to-back steps, {result['repeats']} rounds. The first step of each "
      "block follows the other rows' turns (an idle gap of a step or more) and is not timed; its median "
      "is shown as `first after gap` and `gap cost` (over the in-block median). `s/step`: best in-block "
      "step; `vs best peer`: tokens/s over the fastest torch row of the same group. MFU: FLOP/s over the "
      "best dense float32 [S, S] matmul of the row's own framework in the same process, over every path "
      "it has (`peak`).", "",
      "| batch x L | group | row | configuration | s/step (best) | median | first after gap | gap cost | "
      "tokens/s | vs best peer | TFLOP/step | GFLOP/s | MFU | peak GFLOP/s (path) |",
      "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
  for r in result["rows"]:
    head = f"| {r['batch_size']} x {result['length']} | {r['group']} | {r['name']} |"
    if "error" in r:
      last = r["error"].strip().splitlines()[-1][:120] if r["error"].strip() else "?"
      lines.append(f"{head} error: {last} |||||||||||")
      continue
    peers = [p for p in result["rows"] if p["group"] == r["group"] and p["batch_size"] == r["batch_size"]
             and p["name"].startswith("torch") and "error" not in p]
    best = max(peers, key=lambda p: p["tokens_per_s"], default=None)
    config = (", ".join(r["overrides"]) if r["name"].startswith("jax")
              else f"{r['torch_config']['mode']}, {r['torch_config']['threads']} threads, {r['attention']} attention")
    gap = (f"{r['first_after_gap_s']:.2f} | {r['gap_cost']:.2f}x" if r["first_after_gap_s"] else "- | -")
    paths = ", ".join(f"{p} {v / 1e9:.0f}" for p, v in r["peak_paths"].items())
    lines.append(f"{head} {config} | {r['step_s']:.2f} | {r['median_step_s']:.2f} | {gap} | "
                 f"{r['tokens_per_s']:,.0f} | {_ratio(r, best)} | {r['flops_per_step'] / 1e12:.2f} | "
                 f"{r['flop_per_s'] / 1e9:.1f} | {r['mfu']:.1%} | {paths} ({r['peak_path']}) |")
  return "\n".join(lines) + "\n"


def _uptime() -> str:
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv):
  del argv
  side = _SIDE.value
  groups = parse_groups(_GROUPS.value) if side == "both" else []
  if side == "torch" or any(s == "torch" for g in groups for s, _ in g):
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      import transformers  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      print(f"bench/peer_torch.py: the PyTorch peer needs torch and transformers ({e}); "
            "install them with pip install -e '.[bench]'. Nothing measured.")
      return
  if side != "both":
    serve(side, _ROW.value, _BATCH.value, _LENGTH.value)
    return
  import platform  # pylint: disable=g-import-not-at-top
  allocator = _ALLOCATOR.value
  if allocator != "system" and not allocators.find(allocator):
    raise app.UsageError(f"--allocator={allocator}: {allocators.ALLOCATORS[allocator][0]} is not installed "
                         f"(Debian: apt-get install {allocators.ALLOCATORS[allocator][2]})")
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "uptime_start": _uptime(),
            "length": _LENGTH.value, "batch_sizes": [int(b) for b in _BATCHES.value],
            "block_steps": _BLOCK.value, "repeats": _REPEATS.value, "allocator": allocator,
            "command": "python " + " ".join(["bench/peer_torch.py", *sys.argv[1:]]), "rows": []}
  for batch_size in result["batch_sizes"]:
    for number, group in enumerate(groups, 1):
      for r in run_group(group, batch_size, allocator):
        r["group"] = number
        print(json.dumps({k: (v[-300:] if k == "error" else v) for k, v in r.items()}), flush=True)
        result["rows"].append(r)
  result["uptime_end"] = _uptime()
  results_io.write_results(_OUT.value, _NAME.value, result, markdown(result))


if __name__ == "__main__":
  app.run(main)
