"""Acting speed: ms per environment step of GatoAgent at each preset (KV cache and without) against the
same run's memory-bandwidth limit, and actions/s through gato-serve with 1, 4, 16, 64 sessions.

  python bench/acting.py                                   # tiny_demo and gato_79m; the server on tiny_demo
  python bench/acting.py --presets=tiny_demo,gato_79m,gato_364m --serve_presets=tiny_demo,gato_79m

One action = one environment step of a Meta-World-shaped task (39 continuous observation values, the
separator, 4 continuous action tokens: 44 tokens), batch 1 (one robot), greedy, the preset's context
L = config.data.sequence_length, starting from a demonstration prompt of L/2 tokens. The clock runs
from the observation to the env action (tokenizing, the device, detokenizing).

  cached    GatoAgent: the observation chunk and the 4 action tokens go through the KV cache; when the
            window is full it is re-prefilled (prompt + latest steps within roll_keep * L), which
            the numbers include, amortised, and also show apart; timed for each --roll_keeps value
  uncached  the baseline: a full causal pass over the whole L-token window for every action token

Limits: a batch-1 step makes A = 4 decode calls (the observation chunk of 41 positions, then 3 action
tokens; the 4th action token rides in the next chunk), and each call reads every weight once and the
whole KV cache once. The bandwidth is measured in the same run (a jitted sum over a 1 GiB array, best
of 5): bandwidth limit = 4 * (weight bytes + cache bytes) / bandwidth (the weights-only limit beside
it). The chunk call also multiplies 41 positions through every layer, which on a CPU takes longer than
reading the weights once: the roofline takes, per call, the larger of its read time and its matmul
FLOPs (2 * sequence-model params * positions + the output layer at one position) over the float32
matmul peak measured in the same run (gato_jax/training/flops.py, one device). The agent reads less
than every weight: only the output layer's rows of the action ids (the vocab window of Gato.logits),
so a third limit counts the bytes it actually reads.

Server: bench/serving_load.py (gato-serve on loopback, N concurrent client sessions, greedy).

Writes bench/results/acting.json and bench/results/acting.md. Presets whose parameters cannot be
allocated here are reported as such, not estimated.
"""

import functools
import gc
import json
import os
import platform
import sys
import tempfile
import time

from absl import app, flags, logging
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io, serving_load  # noqa: E402  (the repository root is on sys.path now)

from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec  # pylint: disable=g-import-not-at-top
from gato_jax.tokenizers import VocabLayout  # pylint: disable=g-import-not-at-top

_PRESETS = flags.DEFINE_list("presets", ["tiny_demo", "gato_79m"], "experiments/<name>.py presets.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed environment steps with the cache.")
_UNCACHED_STEPS = flags.DEFINE_integer("uncached_steps", 6, "Timed environment steps without the cache.")
_BIG_PARAMS = flags.DEFINE_float("big_params", 2e8, "Above this many parameters, time at most 12 cached steps "
                                  "with the first roll_keep only, and re-encoding as one timed full pass x 4 "
                                  "(a CPU takes minutes per re-encoded action).")
_ROLL_KEEPS = flags.DEFINE_list("roll_keeps", ["0.75", "0.5"], "GatoAgent.roll_keep values to time with the cache "
                                 "(share of L kept at a re-prefill; the first is config.eval's default).")
_SERVE_PRESETS = flags.DEFINE_list("serve_presets", ["tiny_demo"], "Presets to time through gato-serve.")
_SERVE_TASKS = flags.DEFINE_list("serve_tasks", list(serving_load.TASKS), "Tasks to time through gato-serve "
                                  "(each is warmed at the server's start: minutes of compiling for a big preset).")
_SESSIONS = flags.DEFINE_list("sessions", ["1", "4", "16", "64"], "Concurrent sessions through gato-serve.")
_SERVE_STEPS = flags.DEFINE_integer("serve_steps", 20, "Timed steps per session through gato-serve.")
_RENDER_ONLY = flags.DEFINE_bool("render_only", False, "Rewrite acting.md from acting.json; measure nothing.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                           "Directory of acting.json / acting.md.")

SPEC_WINDOW = 1024  # ids an action token of SPEC can take: the continuous bins (config.vocab.num_continuous_bins)
SPEC_CHUNK = 41  # positions of a step's first decode call: the last action token, 39 values, the separator
SPEC = TaskSpec("metaworld_like", {"state": FieldSpec("continuous", (39,), mu_law=False)},
                ActionSpec("continuous", (4,), (), (-1.0,) * 4, (1.0,) * 4))


def load_config(preset: str):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f"experiments.{preset}").get_config()


def make_model(config, layout):
  """The preset's Gato, initialised by one jitted function (no per-parameter compile)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from gato_jax.model import Gato, options  # pylint: disable=g-import-not-at-top
  config = options.for_inference(config)  # as a loaded checkpoint acts: float32 on CPU
  graphdef, state = jax.jit(lambda: nnx.split(Gato(config.model, layout, nnx.Rngs(0))))()
  return nnx.merge(graphdef, state)


def demo_episode(rng, steps: int):
  return {"steps": {"observation": {"state": rng.uniform(-0.5, 1.0, (steps, 39)).astype(np.float32)},
                    "action": rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
                    "reward": np.zeros(steps, np.float32)}}


def time_agent(agent, rng, warmup: int, steps: int) -> dict:
  """Per-step wall times after `warmup` steps (compiles and the first rolls happen there)."""
  agent.reset([agent.prompt_from_episode(demo_episode(rng, 64))])
  for _ in range(warmup):
    agent.act([{"state": rng.uniform(-0.5, 1.0, 39).astype(np.float32)}])
  times, rolled = [], []
  for _ in range(steps):
    obs = [{"state": rng.uniform(-0.5, 1.0, 39).astype(np.float32)}]
    rolls = agent.rolls
    start = time.perf_counter()
    agent.act(obs)
    times.append(1000.0 * (time.perf_counter() - start))
    rolled.append(agent.rolls > rolls)
  times, rolled = np.asarray(times), np.asarray(rolled)
  out = {"ms_mean": float(times.mean()), "ms_p50": float(np.median(times)), "steps": int(steps),
         "rolls": int(rolled.sum())}
  if rolled.any() and (~rolled).any():
    out["ms_mean_without_roll"] = float(times[~rolled].mean())
    out["ms_mean_roll_steps"] = float(times[rolled].mean())
  return out


def time_full_passes(model, layout, length: int) -> dict:
  """For big presets: one full causal pass over an L-token window (compiled ahead, run once untimed,
  then timed once), times the 4 action tokens: re-encoding runs exactly one such pass per token."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from gato_jax.tokenizers import TokenKind, stream  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)
  window = stream.pad([stream.of_ids(np.full(length, layout.continuous_offset), TokenKind.OBS_CONTINUOUS)],
                      length, left=False)
  forward = jax.jit(lambda s, w: nnx.merge(graphdef, s)(w)[:, -1]).lower(state, window).compile()
  jax.block_until_ready(forward(state, window))  # the first run also pays one-time allocations
  start = time.perf_counter()
  jax.block_until_ready(forward(state, window))
  seconds = time.perf_counter() - start
  ms = 1000.0 * seconds * SPEC.action.size
  return {"ms_mean": ms, "ms_p50": ms, "steps": 1, "rolls": 0, "full_pass_ms": 1000.0 * seconds,
          "method": f"one full pass timed x {SPEC.action.size} action tokens"}


def memory_bandwidth(gib: float = 1.0, reps: int = 5) -> float:
  """Bytes/s of a jitted sum over a `gib` GiB float32 array (best of `reps`): what one device reads."""
  x = jax.jit(lambda: jax.numpy.ones(int(gib * 2**28), jax.numpy.float32))()
  total = jax.jit(lambda a: a.sum())
  jax.block_until_ready(total(x))
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(total(x))
    best = min(best, time.perf_counter() - start)
  del x
  return gib * 2**30 / best


def step_limit(config, params: int, matmul_params: int, bandwidth: float, peak_flops: float,
               chunk_bytes_saved: int = 0) -> dict:
  """The limits of one batch-1 step (module docstring), in ms: bandwidth only, and the roofline.
  `chunk_bytes_saved`: bytes the chunk call does not read because it reads a narrower copy of the
  layer matrices (GatoAgent's chunk_dtype): every limit drops by them."""
  m = config.model
  calls = SPEC.action.size
  weights = 4 * params  # float32
  saved = chunk_bytes_saved / bandwidth
  cache = 2 * m.num_layers * int(config.data.sequence_length) * m.num_heads * m.head_dim * 4
  # Tokens through the matmuls per call: the chunk (the last action token, 39 values, the separator)
  # then one action token per call; the output layer at the last position of each call only.
  tokens = [SPEC_CHUNK] + [1] * (calls - 1)
  call_flops = [2 * matmul_params * t + 2 * m.embed_dim * _vocab_size(config) for t in tokens]
  read_s = (weights + cache) / bandwidth
  # The chunk's compute at the float32 peak even when it multiplies in bfloat16: a looser bound then.
  roofline_s = sum(max(read_s - (saved if i == 0 else 0), f / peak_flops) for i, f in enumerate(call_flops))
  # What the agent actually reads: the output layer's rows of the action ids only (Gato.logits' vocab
  # window), so the text rows of a tied table are never read while acting.
  unread = 4 * (_vocab_size(config) - SPEC_WINDOW) * m.embed_dim if m.tie_embeddings else 0
  return {"decode_calls": calls, "weight_bytes": weights, "cache_bytes": cache, "chunk_bytes_saved": chunk_bytes_saved,
          "limit_ms": 1e3 * (calls * read_s - saved), "weights_only_limit_ms": 1e3 * (calls * weights / bandwidth - saved),
          "step_flops": float(sum(call_flops)), "roofline_ms": 1e3 * roofline_s,
          "read_limit_ms": 1e3 * (calls * (weights - unread + cache) / bandwidth - saved)}


def _vocab_size(config) -> int:
  return VocabLayout.from_config(config.vocab).vocab_size


def step_ms(row: dict) -> float:
  """The batch-1 step without a window roll: the fastest roll_keep's steps that did not roll (a
  roll_keep whose every step rolled, tiny_demo's 0.75, has none)."""
  return min(c.get("ms_mean_without_roll", c["ms_mean"] if not c["rolls"] else float("inf"))
             for c in row["cached"].values())


def add_ratios(row: dict) -> None:
  ms = step_ms(row)
  row["limit"].update(step_ms=ms, x_limit=ms / row["limit"]["limit_ms"], x_roofline=ms / row["limit"]["roofline_ms"],
                      x_read=ms / row["limit"]["read_limit_ms"], hz=1e3 / ms)


def bench_preset(preset: str, bandwidth: float, peak_flops: float) -> dict:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from gato_jax.acting import decode  # pylint: disable=g-import-not-at-top
  from gato_jax.acting.agent import GatoAgent  # pylint: disable=g-import-not-at-top
  from gato_jax.model import options  # pylint: disable=g-import-not-at-top
  config = load_config(preset)
  config.model.dropout_rate = 0.0
  layout = VocabLayout.from_config(config.vocab)
  length = int(config.data.sequence_length)
  row = {"preset": preset, "context": length, "num_layers": config.model.num_layers,
         "embed_dim": config.model.embed_dim, "vocab_size": layout.vocab_size}
  start = time.perf_counter()
  try:
    model = make_model(config, layout)
  except (MemoryError, RuntimeError) as e:  # XlaRuntimeError (RESOURCE_EXHAUSTED) is a RuntimeError
    row["error"] = f"parameters could not be allocated on this machine: {type(e).__name__}: {str(e)[:200]}"
    logging.warning("%s: %s", preset, row["error"])
    return row
  row["params"] = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
  row["sequence_model_params"] = int(sum(x.size for x in jax.tree.leaves(nnx.state(model.sequence_model, nnx.Param))))
  row["init_s"] = time.perf_counter() - start
  rng = np.random.default_rng(0)
  # As gato-eval and gato-serve act (config.eval.chunk_dtype "auto"): bfloat16 chunks on an AMX host.
  chunk_dtype = options.chunk_dtype(config)
  row["chunk_dtype"] = chunk_dtype or "float32"
  agent = functools.partial(GatoAgent, model, layout, SPEC, context_length=length, greedy=True,
                            chunk_dtype=chunk_dtype)
  # Enough warm-up steps to pass the first roll, so the compiles of every shape are out of the clock.
  warmup = max(3, int((length - length // 2) / 44) + 3)
  big = row["params"] > _BIG_PARAMS.value  # seconds per re-encoded action on a CPU: fewer samples
  steps = min(_STEPS.value, 12) if big else _STEPS.value
  row["cached"] = {}
  for keep in [float(k) for k in _ROLL_KEEPS.value][:1 if big else None]:
    row["cached"][f"{keep:g}"] = time_agent(agent(use_cache=True, roll_keep=keep), rng, warmup, steps)
    logging.info("%s cached, roll_keep %g: %s", preset, keep, row["cached"][f"{keep:g}"])
  if chunk_dtype is not None:  # the same steps with float32 chunks, to show what the narrower copy buys
    keep = float(_ROLL_KEEPS.value[0])
    row["cached_float32_chunks"] = {f"{keep:g}": time_agent(agent(use_cache=True, roll_keep=keep, chunk_dtype=None),
                                                           rng, warmup, steps)}
    logging.info("%s cached, float32 chunks: %s", preset, row["cached_float32_chunks"])
  if big:
    row["uncached"] = time_full_passes(model, layout, length)
  else:
    row["uncached"] = time_agent(agent(use_cache=False), rng, 1, _UNCACHED_STEPS.value)
  logging.info("%s uncached: %s", preset, row["uncached"])
  row["speedup"] = {k: row["uncached"]["ms_mean"] / c["ms_mean"] for k, c in row["cached"].items()}
  # Bytes the chunk call does not read: one layer's arrays against decode.narrowed's copy of them, per layer.
  layer = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                       nnx.state(model.sequence_model.layers, nnx.Param))
  size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  narrow = jax.eval_shape(functools.partial(decode.narrowed, dtype=chunk_dtype), layer)
  saved = config.model.num_layers * (size(layer) - size(narrow))
  row["limit"] = step_limit(config, row["params"], row["sequence_model_params"], bandwidth, peak_flops, saved)
  add_ratios(row)
  if preset in _SERVE_PRESETS.value:
    counts = [int(n) for n in _SESSIONS.value]
    with tempfile.TemporaryDirectory() as directory:
      params = serving_load.export(model, directory)
      del model, agent
      gc.collect()
      try:
        row["server"] = serving_load.bench_server(params, preset, counts, warmup=length // 44 + 3,
                                                  steps=_SERVE_STEPS.value, tasks=_SERVE_TASKS.value)
      except Exception as e:  # pylint: disable=broad-except  # the batch-1 figures above are kept
        row["server_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    logging.info("%s server: %s", preset, row.get("server", row.get("server_error")))
  return row


def markdown(result: dict) -> str:
  m = result["machine"]
  lines = [
      "# Acting latency (bench/acting.py)", "",
      f"Machine: {m['cpu']} ({m['cores']} cores), jax {m['jax']} on {m['backend']} "
      f"({m['devices']} device(s), the agent uses one); load average at start {m['load_average']} "
      "(a shared machine: other jobs ran beside this one).",
      f"Task shape: {result['task']}. Batch 1, greedy.", "",
      "| preset | params | context L | roll_keep | chunks in | cached ms/action (amortised) | rolls / steps | "
      "cached, steps without a roll | re-encoding ms/action | speedup (amortised) |",
      "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in result["presets"]:
    if "error" in r:
      lines.append(f"| {r['preset']} | n/a | {r['context']} | | | {r['error']} | | | | |")
      continue
    u = r["uncached"]
    runs = [(keep, r.get("chunk_dtype", "float32"), c) for keep, c in r["cached"].items()]
    runs += [(keep, "float32", c) for keep, c in r.get("cached_float32_chunks", {}).items()]
    for keep, chunks, c in runs:
      lines.append(f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['context']} | {keep} | {chunks} | {c['ms_mean']:.1f} | "
                   f"{c['rolls']} / {c['steps']} | {c.get('ms_mean_without_roll', c['ms_mean']):.1f} | "
                   f"{u['ms_mean']:.1f} ({u.get('method', str(u['steps']) + ' steps')}) | "
                   f"{u['ms_mean'] / c['ms_mean']:.1f}x |")
  lines += ["", f"Measured in this run: memory bandwidth {result['bandwidth_gb_s']:.1f} GB/s, float32 matmul peak "
            f"{result['peak_gflops']:.0f} GFLOP/s (module docstring).", "",
            "| preset | batch-1 ms/step (cached, no roll) | Hz | bandwidth limit ms (weights + cache) | x | "
            "roofline ms (each call: bandwidth or compute) | x | limit of what acting reads ms | x |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in result["presets"]:
    if "limit" in r:
      lim = r["limit"]
      lines.append(f"| {r['preset']} | {lim['step_ms']:.1f} | {lim['hz']:.1f} | "
                   f"{lim['limit_ms']:.1f} | {lim['x_limit']:.1f}x | {lim['roofline_ms']:.1f} | "
                   f"{lim['x_roofline']:.1f}x | {lim['read_limit_ms']:.1f} | {lim['x_read']:.1f}x |")
  lines += ["", twenty_hz(result)]
  lines += [f"\n{r['preset']} through gato-serve failed: {r['server_error']}" for r in result["presets"]
            if "server_error" in r]
  served = [r for r in result["presets"] if r.get("server")]
  if served:
    lines += ["", "Through gato-serve (loopback HTTP, greedy, N sessions stepping at once; clients in one process "
              "on the same 2 cores):", "",
              "| preset | task | sessions | actions/s | x one session | ms/step p50 | p90 |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in served:
      one = {}
      for s_ in r["server"]:
        one.setdefault(s_["task"], s_["actions_per_s"])
        lines.append(f"| {r['preset']} | {s_['task']} | {s_['sessions']} | {s_['actions_per_s']:.1f} | "
                     f"{s_['actions_per_s'] / one[s_['task']]:.1f}x | {s_['ms_p50']:.0f} | {s_['ms_p90']:.0f} |")
  lines += ["", "Chunks in: the dtype of the calls of more than one position (the observation chunk, window prefills; "
            "config.eval.chunk_dtype, auto: bfloat16 products with float32 accumulation for a float32 model on a "
            "CPU with AMX); an action token at batch 1 is float32, those of a batch (gato-serve's rows) use the "
            "bfloat16 copy too. The limits count the chunk call reading that copy of the layer matrices; the "
            "roofline still puts its matmuls at the float32 peak.", "",
            "Cached: the observation chunk and each action token through the KV cache; a full window "
            "is re-prefilled with the prompt and the latest steps within roll_keep x L (that prefill is in "
            "the amortised column). Re-encoding: one full causal pass over the L-token window per action "
            "token. A step is 44 tokens, so the tiny preset's 256-token window (half of it prompt) must "
            "be re-prefilled every step or two: there the prefill, not the cache, sets the cost."]
  return "\n".join(lines) + "\n"


# HBM bandwidth per chip of the TPU targets of bench/fit_table.py (public spec sheets), bytes/s.
TPU_HBM = {"v5e": 819e9, "v5p": 2765e9, "v6e": 1640e9}


def twenty_hz(result: dict) -> str:
  """How large a model acts at 20 Hz (50 ms a step): measured here, and the bandwidth bound on TPUs."""
  fast = [r for r in result["presets"] if "limit" in r and r["limit"]["hz"] >= 20]
  here = (f"the largest preset measured at 20 Hz or more is {fast[-1]['preset']} ({fast[-1]['params'] / 1e6:.0f}M, "
          f"{fast[-1]['limit']['hz']:.0f} Hz)" if fast else "no measured preset reaches 20 Hz")
  bound = lambda bandwidth, nbytes: 0.05 * bandwidth / (SPEC.action.size * nbytes)  # params read 4x per step
  tpus = ", ".join(f"{k} ~{bound(v, 2) / 1e9:.1f}B" for k, v in TPU_HBM.items())
  return (f"20 Hz (50 ms a step, 4 decode calls each reading every weight): on this machine {here}; its "
          f"bandwidth alone bounds a float32 model at ~{bound(result['bandwidth_gb_s'] * 1e9, 4) / 1e6:.0f}M "
          f"parameters. On one TPU chip with bfloat16 weights the same bound is {tpus} parameters "
          "(HBM bandwidth from the spec sheets; the compile-only act_step of bench/fit_table.py says such a "
          "step fits in memory, not how fast it runs: an estimate, not a measurement).")


def main(argv):
  del argv
  if _RENDER_ONLY.value:  # the markdown again from acting.json (the ratios recomputed from its rows)
    with open(os.path.join(_OUT.value, "acting.json")) as f:
      result = json.load(f)
    for row in result["presets"]:
      if "limit" in row:
        add_ratios(row)
    results_io.write_results(_OUT.value, "acting", result, markdown(result))
    return
  result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "jax": jax.__version__, "backend": jax.default_backend(),
                        "devices": jax.device_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
            "task": "Meta-World-shaped: 39 continuous observation tokens + separator + 4 continuous action tokens",
            "presets": []}
  from gato_jax.training import flops  # pylint: disable=g-import-not-at-top
  result["bandwidth_gb_s"] = memory_bandwidth() / 1e9
  result["peak_gflops"] = flops.measure_host_flops("float32", num_devices=1) / 1e9
  logging.info("memory bandwidth: %.1f GB/s; float32 matmul peak %.0f GFLOP/s", result["bandwidth_gb_s"],
               result["peak_gflops"])
  for preset in _PRESETS.value:
    logging.info("benchmarking %s", preset)
    result["presets"].append(bench_preset(preset, result["bandwidth_gb_s"] * 1e9, result["peak_gflops"] * 1e9))
  results_io.write_results(_OUT.value, "acting", result, markdown(result))


if __name__ == "__main__":
  app.run(main)
