"""The rows of bench/peer_torch.py: the PyTorch peer (GPT-Neo as JAT trains it) and gato-jax's train step.

Each builder returns (step function, row info); the step function ends with the loss as a Python
float, so the work has finished when it returns. `info["peak_fn"]` measures the matmul peak of the
row's own framework and path: for torch, every float32 matmul path it has on the host (ATen's, which
nn.Linear and torch.compile's GEMMs call, and oneDNN's on its own tensors), the best of them being
the denominator of the row's MFU, so no path the peer could take flatters it.
"""

import os
import statistics
import time

# torch rows: mode -> torch.compile keyword arguments (None: eager).
TORCH_MODES = {
    "eager": None,
    "compile": {},
    # Inductor benchmarks its own C++ GEMM templates against ATen's per shape and keeps the faster.
    "max_autotune": {"mode": "max-autotune-no-cudagraphs"},
}
JAX_ROWS = ("no_images", "images")


def summarize_blocks(blocks: list) -> dict:
  """A row's figures from its blocks of back-to-back step times: the first step of each block (after
  the other rows' turns) apart, the rest timed. Blocks of one step: every step timed."""
  timed_steps = [t for b in blocks for t in (b[1:] if len(b) > 1 else b)]
  median = statistics.median(timed_steps)
  first = statistics.median(b[0] for b in blocks) if all(len(b) > 1 for b in blocks) else None
  return dict(step_s=min(timed_steps), median_step_s=median, timed_steps_s=timed_steps,
              first_after_gap_s=first, gap_cost=first / median if first is not None else None)


def timed(fn) -> float:
  started = time.perf_counter()
  fn()
  return time.perf_counter() - started


def torch_matmul_peaks(sizes) -> dict:
  """{path: {size: FLOP/s}} of dense float32 [S, S] matmuls on each path torch has on this host."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.utils.mkldnn  # pylint: disable=g-import-not-at-top,unused-import  (not imported by torch)
  out = {"aten": {}, "onednn": {}}
  for size in map(int, sizes):
    a, b = torch.randn(size, size), torch.randn(size, size)
    out["aten"][size] = 2 * size**3 / min(timed(lambda: torch.mm(a, b)) for _ in range(5))
    linear = torch.nn.Linear(size, size, bias=False).eval()
    packed = torch.utils.mkldnn.to_mkldnn(linear)
    x = a.to_mkldnn()
    with torch.no_grad():
      packed(x)
      out["onednn"][size] = 2 * size**3 / min(timed(lambda: packed(x).to_dense()) for _ in range(5))
  return out


def peer_flops(non_embedding: int, shape: dict, batch_size: int, length: int) -> float:
  """bench/train_step.py's convention (gato_jax.training.flops) for the peer's shape."""
  tokens = batch_size * length
  return float(tokens * (6 * non_embedding + 12 * shape["layers"] * shape["width"] * length
                         + 6 * shape["width"] * shape["vocab"]))


def torch_row(mode: str, batch_size: int, length: int, shape: dict, peak_sizes):
  """The peer's train step, eager or compiled (TORCH_MODES), on all the host's cores."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if mode not in TORCH_MODES:
    raise ValueError(f"torch row {mode!r}: expected one of {sorted(TORCH_MODES)}")
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  config = transformers.GPTNeoConfig(
      vocab_size=shape["vocab"], max_position_embeddings=length, hidden_size=shape["width"],
      num_layers=shape["layers"], attention_types=[[["global", "local"], shape["layers"] // 2]],
      num_heads=shape["heads"], intermediate_size=shape["mlp"], window_size=shape["window"],
      activation_function="gelu_new", resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0,
      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
  model = transformers.GPTNeoForCausalLM(config).train()
  decay = [p for p in model.parameters() if p.ndim >= 2]  # as gato-jax: no decay on norms and biases
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
  compile_kwargs = TORCH_MODES[mode]
  forward = model if compile_kwargs is None else torch.compile(model, **compile_kwargs)
  tokens = torch.randint(0, shape["vocab"], (batch_size, length))
  targets = torch.randint(0, shape["vocab"], (batch_size, length))

  def step():
    logits = forward(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.float().view(-1, shape["vocab"]), targets.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  total = sum(p.numel() for p in model.parameters())
  lookup = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
  non_embedding = total - lookup - model.lm_head.weight.numel()
  info = dict(params=total, peak_fn=lambda: torch_matmul_peaks(peak_sizes),
              flops_per_step=peer_flops(non_embedding, shape, batch_size, length),
              framework=f"torch {torch.__version__}", transformers=transformers.__version__,
              attention=model.config._attn_implementation,  # pylint: disable=protected-access
              torch_config=dict(mode=mode, compile=compile_kwargs, threads=torch.get_num_threads(),
                                parallel=torch.__config__.parallel_info().splitlines()[-1].strip()))
  return step, info


def jax_row(name: str, batch_size: int, length: int, preset: str, overrides: list, peak_sizes):
  """gato-jax's real train step (bench/train_step.Runner): `no_images` (max_image_tokens=0) or
  `images` (the batch's image positions gathered and encoded by the patch ResNet)."""
  from bench import train_step as ts  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  if name not in JAX_ROWS:
    raise ValueError(f"jax row {name!r}: expected one of {JAX_ROWS}")
  extra = {"max_image_tokens": 0} if name == "no_images" else {}
  runner = ts.Runner(ts.load_config(preset, **ts.parse_overrides(overrides), **extra),
                     batch_size=batch_size, length=length, gather_images=name == "images")

  def step():
    runner.step(timed=False)
    return float(runner.metrics["loss"])

  info = dict(params=runner.info["params"], peak_fn=lambda: {"xla": ts.matmul_peak("float32", peak_sizes, 1)},
              flops_per_step=runner.info["flops_per_step"], compile_s=runner.compile_s,
              framework=f"jax {jax.__version__}", image_tokens_per_row=runner.image_tokens,
              overrides=list(overrides))
  return step, info
