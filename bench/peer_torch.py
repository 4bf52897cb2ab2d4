"""The PyTorch peer of the train-step bench: transformers' GPT-Neo at gato_79m's shape, side by side.

    python bench/peer_torch.py                              # batch 1, 4, 8 at L=1024, both sides
    python bench/peer_torch.py --batches=4 --jax_overrides=scan_layers=False
    python bench/peer_torch.py --side=torch --row=compile --batch_size=4 < steps  # one row (the protocol)

The peer is the transformer JAT trains (transformers' GPTNeoForCausalLM): 8 layers, width 768, 24
heads, alternating global / local (window 256) attention, gelu_new MLP 3072, an untied 33,024-row
output layer; AdamW (b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1) after clipping the global gradient
norm to 1, dropout off, float32, as gato-jax's `cpu` row; eager and torch.compile. It reads token ids
only: JAT's image encoder is not part of it, so gato-jax's image rows pay for a patch ResNet the peer
does not run (the image-free rows compare like with like).

Each row runs in its own process and measures its own framework's dense float32 matmul peak on the
same [S, S] sizes (the denominator of its MFU). Rows run in pairs, the image-free JAX row with the
compiled peer and the image row with the eager peer: both processes build and warm up, then their
timed steps alternate one by one, so a burst of load from other jobs falls on both alike. FLOPs per step use the JAX bench's convention for
both (PaLM's 6N: 6 x non-embedding params x tokens + 12 x layers x width x L x tokens for attention,
no discount for causal or local masks + 6 x width x vocab x tokens for the output layer). Step time
is the best of the timed steps, as in bench/train_step.py. torch and transformers come from the
`bench` extra (pip install -e ".[bench]"); without them this says so and exits 0.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import results_io  # noqa: E402  (the repository root is on sys.path now)

_SIDE = flags.DEFINE_enum("side", "both", ["both", "torch", "jax"], "both: run each side in a subprocess")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "8"], "sequences per step (--side=both)")
_BATCH = flags.DEFINE_integer("batch_size", 4, "sequences per step (one side)")
_LENGTH = flags.DEFINE_integer("seq_length", 1024, "sequence length L")
_WARMUP = flags.DEFINE_integer("warmup_steps", 1, "untimed steps (torch.compile compiles in the first)")
_STEPS = flags.DEFINE_integer("timed_steps", 2, "timed steps per row")
_SIZES = flags.DEFINE_list("peak_sizes", ["2048", "4096"], "sizes S of the [S, S] matmuls of the peak")
_ROW = flags.DEFINE_string("row", "compile", "one side's row: eager | compile (torch), no_images | images (jax)")
_SHAPE = flags.DEFINE_list("shape", ["layers=8", "width=768", "heads=24", "mlp=3072", "vocab=33024",
                                     "window=256"], "the peer's shape (key=value)")
_PRESET = flags.DEFINE_string("preset", "gato_79m", "the JAX side's experiments/<name>.py")
_OVERRIDES = flags.DEFINE_list("jax_overrides", ["dtype=float32", "remat_policy=none", "dropout_rate=0.0"],
                               "config.model keys of the JAX rows")
_OUT = flags.DEFINE_string("out", "bench/results", "where peer_torch.{json,md} go (--side=both)")
_TAG = "PEER_ROW "  # prefix of the JSON line a side prints
_PAIRS = flags.DEFINE_list("pairs", ["no_images:compile", "images:eager"],
                           "jax row:torch row pairs timed in turn (by default the image-free JAX row "
                           "against the compiled peer, the image row against eager)")


def parse_shape() -> dict:
  return {k: int(v) for k, v in (item.split("=", 1) for item in _SHAPE.value)}


def torch_row(mode: str, batch_size: int, length: int):
  """(train step function, row info) of the peer, eager or torch.compile; measures torch's matmul peak."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  s = parse_shape()
  def peak():
    out = {}
    for size in map(int, _SIZES.value):
      a, b = torch.randn(size, size), torch.randn(size, size)
      out[size] = 2 * size**3 / min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    return out

  torch.manual_seed(0)
  config = transformers.GPTNeoConfig(
      vocab_size=s["vocab"], max_position_embeddings=length, hidden_size=s["width"],
      num_layers=s["layers"], attention_types=[[["global", "local"], s["layers"] // 2]],
      num_heads=s["heads"], intermediate_size=s["mlp"], window_size=s["window"],
      activation_function="gelu_new", resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0,
      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
  model = transformers.GPTNeoForCausalLM(config).train()
  decay = [p for p in model.parameters() if p.ndim >= 2]  # as gato-jax: no decay on norms and biases
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
  forward = torch.compile(model) if mode == "compile" else model
  tokens = torch.randint(0, s["vocab"], (batch_size, length))
  targets = torch.randint(0, s["vocab"], (batch_size, length))

  def step():
    logits = forward(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.float().view(-1, s["vocab"]), targets.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  total = sum(p.numel() for p in model.parameters())
  lookup = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
  non_embedding = total - lookup - model.lm_head.weight.numel()
  info = dict(params=total, peak_fn=peak, flops_per_step=peer_flops(non_embedding, s, batch_size, length),
              framework=f"torch {torch.__version__}", transformers=transformers.__version__,
              attention=model.config._attn_implementation)  # pylint: disable=protected-access
  return step, info


def peer_flops(non_embedding: int, s: dict, batch_size: int, length: int) -> float:
  """bench/train_step.py's convention (gato_jax.training.flops) for the peer's shape."""
  tokens = batch_size * length
  return float(tokens * (6 * non_embedding + 12 * s["layers"] * s["width"] * length + 6 * s["width"] * s["vocab"]))


def jax_row(name: str, batch_size: int, length: int):
  """(train step function, row info) of gato-jax's real train step (bench/train_step.Runner):
  `no_images` (max_image_tokens=0) or `images` (the batch's image positions gathered)."""
  from bench import train_step as ts  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  overrides = ts.parse_overrides(_OVERRIDES.value)
  extra = {"max_image_tokens": 0} if name == "no_images" else {}
  runner = ts.Runner(ts.load_config(_PRESET.value, **overrides, **extra), batch_size=batch_size,
                     length=length, gather_images=name == "images")

  def step():
    runner.step(timed=False)
    return float(runner.metrics["loss"])

  info = dict(params=runner.info["params"], peak_fn=lambda: ts.matmul_peak("float32", _SIZES.value, 1),
              flops_per_step=runner.info["flops_per_step"],
              compile_s=runner.compile_s, framework=f"jax {jax.__version__}",
              image_tokens_per_row=runner.image_tokens, overrides=_OVERRIDES.value)
  return step, info


def _timed(fn) -> float:
  started = time.perf_counter()
  fn()
  return time.perf_counter() - started


def serve(side: str, row: str, batch_size: int, length: int):
  """One row in this process: build, warm up, then one timed step per "step" line on stdin; "done"
  prints the row. The parent alternates the two sides' steps, so load bursts hit both alike."""
  started = time.perf_counter()
  step, info = (torch_row if side == "torch" else jax_row)(row, batch_size, length)
  peak_fn = info.pop("peak_fn")
  info["peak_before"] = peak_fn()
  for _ in range(_WARMUP.value):
    step()
  info["build_and_warmup_s"] = time.perf_counter() - started
  print("READY", flush=True)
  times, loss = [], None
  for line in sys.stdin:
    if line.strip() != "step":
      break
    started = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - started)  # float(loss) inside step(): the work has finished
    print(f"TIME {times[-1]}", flush=True)
  if not times:
    sys.exit(f"bench/peer_torch.py: {side} {row}: no timed step (the other side of the pair failed)")
  info["peak_after"] = peak_fn()
  step_s = min(times)
  # The best matmul throughput seen before or after the steps: load only ever lowers it, and a
  # denominator measured in a burst of load would flatter the MFU.
  peak = max(*info["peak_before"].values(), *info["peak_after"].values())
  print(_TAG + json.dumps(dict(
      info, name=f"{side} {row}", batch_size=batch_size, length=length, step_times_s=times, step_s=step_s,
      tokens_per_s=batch_size * length / step_s, flop_per_s=info["flops_per_step"] / step_s,
      peak_flop_per_s=peak, mfu=info["flops_per_step"] / step_s / peak, loss=loss)), flush=True)


def _start(side: str, row: str, batch_size: int) -> subprocess.Popen:
  # One inductor compile thread: its default worker pool costs gigabytes this 2-core box lacks.
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", TORCHINDUCTOR_COMPILE_THREADS="1")
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


def run_pair(pair, batch_size: int) -> list:
  """Two rows ((side, row) each) in their own processes, their timed steps taken in turn."""
  procs = [_start(side, row, batch_size) for side, row in pair]
  failed = [p for p in procs if _read_until(p, "READY") is None]
  if not failed:
    for _ in range(_STEPS.value):
      for p in procs:
        p.stdin.write("step\n")
        p.stdin.flush()
        if _read_until(p, "TIME ") is None:
          failed.append(p)
          break
      if failed:
        break
  rows = []
  for (side, row), p in zip(pair, procs):
    if p not in failed:
      p.stdin.write("done\n")
      p.stdin.flush()
      line = _read_until(p, _TAG.strip())
      if line is not None:
        rows.append(json.loads(line))
        p.wait()
        continue
    p.kill()
    error = p.stderr.read()[-2000:]
    rows.append({"name": f"{side} {row}", "batch_size": batch_size, "error": error or "no output"})
  return rows


def markdown(result: dict) -> str:
  """The side-by-side table: every row of a batch size with its ratio to the compiled peer."""
  lines = [
      "# gato-jax vs the PyTorch peer (GPT-Neo as JAT trains it), train step on this CPU", "",
      f"Machine: {result['machine']}. `uptime` at the start: {result['uptime_start']}; at the end: "
      f"{result['uptime_end']}. Each row in its own process; rows run in pairs whose timed steps alternate. Written by "
      f"`bench/peer_torch.py` ({result['command']}).", "",
      "MFU: the row's FLOP/s over its own framework's best dense float32 [S, S] matmul in the same "
      "process. `vs compiled peer` / `vs eager peer`: tokens/s over that torch row's at the same batch "
      "size (the image-free row ran step for step with the compiled peer, the image row with eager).", "",
      "| batch x L | row | s/step (best) | tokens/s | vs compiled peer | vs eager peer | TFLOP/step | "
      "GFLOP/s | MFU | matmul peak GFLOP/s |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for batch_size in result["batch_sizes"]:
    rows = [r for r in result["rows"] if r["batch_size"] == batch_size]
    peers = [next((r for r in rows if r["name"] == name and "error" not in r), None)
             for name in ("torch compile", "torch eager")]
    for r in rows:
      if "error" in r:
        lines.append(f"| {batch_size} x {result['length']} | {r['name']} | error: "
                     f"{r['error'].strip().splitlines()[-1][:120] if r['error'].strip() else '?'} ||||||||")
        continue
      ratios = " | ".join(f"{r['tokens_per_s'] / p['tokens_per_s']:.2f}x" if p else "-" for p in peers)
      lines.append(f"| {batch_size} x {r['length']} | {r['name']} | {r['step_s']:.2f} | {r['tokens_per_s']:,.0f} | "
                   f"{ratios} | {r['flops_per_step'] / 1e12:.2f} | {r['flop_per_s'] / 1e9:.1f} | "
                   f"{r['mfu']:.1%} | {r['peak_flop_per_s'] / 1e9:.1f} |")
  return "\n".join(lines) + "\n"


def _uptime() -> str:
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv):
  del argv
  side = _SIDE.value
  if side in ("both", "torch"):
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
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "uptime_start": _uptime(),
            "length": _LENGTH.value, "batch_sizes": [int(b) for b in _BATCHES.value],
            "command": "python " + " ".join(["bench/peer_torch.py", *sys.argv[1:]]), "rows": []}
  for batch_size in result["batch_sizes"]:
    for pair in [(("jax", j), ("torch", t)) for j, t in (p.split(":") for p in _PAIRS.value)]:
      rows = run_pair(pair, batch_size)
      for r in rows:
        print(json.dumps({k: (v[-300:] if k == "error" else v) for k, v in r.items()}), flush=True)
      result["rows"].extend(rows)
  result["uptime_end"] = _uptime()
  results_io.write_results(_OUT.value, "peer_torch", result, markdown(result))


if __name__ == "__main__":
  app.run(main)
