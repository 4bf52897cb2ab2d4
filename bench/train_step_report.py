"""bench/train_step.py's profile summary (top XLA ops of one traced step) and its markdown report."""

import collections
import glob
import gzip
import json
import os
import re

# HLO instruction line: "%name = type opcode(operands), ... metadata={op_name="..." ...}"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^=]*\)|[^ ]+) ([\w\-]+)\(")
_SHAPE = re.compile(r" = \(?\w+\[([\d,]*)\]")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) [(]")


def _hlo_index(hlo_text: str) -> dict:
  """instruction name -> (opcode, jax op_name, the opcodes inside the computation it calls)."""
  computations, current, instructions = collections.defaultdict(set), None, {}
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match and not line.startswith(" "):
      current = match.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, opcode = match.groups()
    computations[current].add(opcode)
    op_name = _OP_NAME.search(line)
    calls = _CALLS.search(line)
    shape = _SHAPE.search(line)
    dims = tuple(int(d) for d in shape.group(1).split(",") if d) if shape else ()
    instructions[name] = (opcode, op_name.group(1) if op_name else "", calls.group(1) if calls else None, dims)
  return {name: (opcode, op_name, computations.get(calls, set()), dims)
          for name, (opcode, op_name, calls, dims) in instructions.items()}


def _category(opcode: str, inner: set, dims: tuple, num_heads: int) -> str:
  ops = inner | {opcode}
  if "convolution" in ops:
    return "convolution (patch ResNet)"
  # Attention scores / probabilities: a heads axis followed by two long (query, key) axes.
  if num_heads in dims[:-2] and len(dims) >= 3 and min(dims[-2:]) >= 128:
    return "attention scores: matmul" if "dot" in ops else "attention scores: softmax, mask, stores"
  if "dot" in ops:
    return "matmul (projections, MLP, output layer)"
  if ops & {"gather", "scatter", "dynamic-slice", "dynamic-update-slice"}:
    return "gather / scatter / dynamic slice"
  if ops & {"reduce", "reduce-window"}:
    return "reduction (norms, softmax, loss, optimizer norms)"
  if ops & {"copy", "transpose"}:
    return "copy / transpose"
  if ops & {"rng-bit-generator", "shift-right-logical"}:
    return "random bits"
  return "elementwise / other"


def _short(op_name: str) -> str:
  """The jax op path without the jit/transpose wrappers, last 3 components."""
  parts = [p for p in op_name.split("/") if p and not p.startswith(("jit(", "pjit("))
           and p not in ("while", "body", "closed_call", "cond")]
  return "/".join(parts[-3:])[:90]


def profile_summary(trace_dir: str, hlo_text: str, num_heads: int, top: int = 15) -> dict:
  """Per-op device time of the traced steps from the perfetto trace, classified with the HLO."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  if not paths:
    return {"error": f"no perfetto trace under {trace_dir}"}
  with gzip.open(paths[-1]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  index = _hlo_index(hlo_text)
  per_op, per_category = collections.Counter(), collections.Counter()
  meta = {}
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") != "X" or "hlo_op" not in args or not args.get("hlo_module", "").startswith("jit_train_step"):
      continue
    name = args["hlo_op"]
    opcode, op_name, inner, dims = index.get(name, ("?", "", set(), ()))
    per_op[name] += e["dur"]
    per_category[_category(opcode, inner, dims, num_heads)] += e["dur"]
    meta[name] = (f"{opcode} {list(dims)}", _short(op_name))
  total = sum(per_op.values())
  return {
      "trace": paths[-1], "op_time_s": total / 1e6,
      "categories": [(c, t / total) for c, t in per_category.most_common()],
      "top_ops": [(name, meta[name][0], meta[name][1], t / total) for name, t in per_op.most_common(top)],
  }


def _fmt_flops(x: float) -> str:
  return f"{x / 1e9:,.1f}"


def markdown(result: dict) -> str:
  m = result["machine"]
  lines = [
      "# Train-step throughput", "",
      f"Machine: {m['processor']}, {m['cpus']} CPU cores, {m['platform']} ({m['device_kind']}), jax {m['jax']}, "
      f"load average {m['load_average']} at the start and {m.get('load_average_end', '?')} at the end "
      "(shared with other jobs: compare ratios within "
      "this run, not absolute times across runs). Sequence length "
      f"{result['length']}; random features (`features.random_batch` via the synthetic iterator) on "
      "the device; the real jitted, donated train step. Written by `bench/train_step.py`.", "",
      "FLOPs per step: `flops.train_flops_per_step`, PaLM's 6N convention (6 x non-embedding params x "
      "tokens + attention + output projection; recomputation by remat is not counted). MFU = "
      "achieved FLOP/s / the best dense matmul FLOP/s XLA reached in this run on the same devices and "
      "dtype:", ""]
  for key, peak in result["matmul_peaks"].items():
    fmt = lambda d: ", ".join(f"{s}: {_fmt_flops(v)}" for s, v in d.items())
    lines.append(f"- {key} device(s): before {fmt(peak['before'])}; after {fmt(peak.get('after', {}))} "
                 "GFLOP/s ([S, S] matmul size: FLOP/s)")
  lines += ["", f"`cpu` rows: the preset with {', '.join(result['cpu_overrides'])}.", "",
            "s/step is the best of the timed steps (contention only adds time); `batch h2d ms`: "
            "host -> device copy of the step's batch (uint8 patches included).", "",
            "| preset | variant | params | batch x L | devices | compile s | s/step | steps/s | tokens/s "
            "| GFLOP/s | MFU | batch h2d ms | loss finite |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
  for r in result["rows"]:
    if "error" in r:
      lines.append(f"| {r['preset']} | {r['variant']} | | | | | | | | | | | {r['error']} |")
      continue
    lines.append(
        f"| {r['preset']} | {r['variant']} | {r['params'] / 1e6:.1f}M | {r['batch_size']} x {r['length']} | "
        f"{r['devices']} | {r['compile_s']:.1f} | {r['step_s']:.2f} | {r['steps_per_s']:.3f} | "
        f"{r['tokens_per_s']:,.0f} | {_fmt_flops(r['flop_per_s'])} | {r['mfu']:.1%} | "
        f"{r['transfer_s'] * 1e3:.1f} | {r['finite']} |")
  lines += _ablation_lines(result["rows"]) + _pipeline_lines(result) + profile_lines(result.get("profiles"))
  return "\n".join(lines) + "\n"


def _ablation_lines(rows) -> list:
  ablated = [r for r in rows if "cpu_row_step_s" in r]
  if not ablated:
    return []
  lines = ["", f"## One switch flipped against the `cpu` row of {ablated[0]['preset']} (same run, interleaved)", "",
           "Each switch's train step and the `cpu` row's ran step for step in turn (best of the timed "
           "steps each). `cpu row / this` > 1: the switch is faster on this host; < 1: the `cpu` "
           "row's setting is faster by 1 / that factor.", "",
           "| switch | s/step | `cpu` row s/step (alongside) | cpu row / this | MFU | compile s |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in ablated:
    lines.append(f"| {r['variant']} | {r['step_s']:.2f} | {r['cpu_row_step_s']:.2f} | "
                 f"{r['cpu_row_step_s'] / r['step_s']:.2f}x | {r['mfu']:.1%} | {r['compile_s']:.1f} |")
  return lines


def _pipeline_lines(result) -> list:
  pipeline = result.get("input_pipeline_tokens_per_s") or {}
  rows = [r for r in result["rows"] if r.get("variant") in ("preset", "cpu") and "error" not in r]
  if not pipeline or not rows:
    return []
  names = list(pipeline)
  lines = ["", f"## Input pipeline vs train step (L = {result['length']})", "",
           "Input tokens/s of one process (bench/results/input_pipeline.json, wall clock) / tokens/s "
           "the train step consumes: > 1 means the pipeline keeps up.", "",
           "| preset | variant | step tokens/s | " + " | ".join(names) + " |",
           "| --- | --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
  for r in rows:
    lines.append(f"| {r['preset']} | {r['variant']} | {r['tokens_per_s']:,.0f} | "
                 + " | ".join(f"{pipeline[n] / r['tokens_per_s']:,.0f}x" for n in names) + " |")
  return lines


def profile_lines(profiles: dict) -> list:
  """Markdown of each traced row's op-time shares (bench/results/PROFILE.md and train_step.md)."""
  lines = []
  for name, profile in (profiles or {}).items():
    if "error" in profile:
      lines += ["", f"## Profile of `{name}`: {profile['error']}"]
      continue
    lines += ["", f"## Profile of one step of the `{name}` row (jax.profiler trace, XLA:CPU ops)", "",
              f"{profile['op_time_s']:.2f} s of op time (per-op durations summed; ops may overlap).", "",
              "| category | share of op time |", "| --- | ---: |"]
    lines += [f"| {c} | {s:.1%} |" for c, s in profile["categories"]]
    lines += ["", "| HLO op | opcode [shape] | jax op | share |", "| --- | --- | --- | ---: |"]
    lines += [f"| {n} | {o} | `{j}` | {s:.1%} |" for n, o, j, s in profile["top_ops"]]
  return lines
