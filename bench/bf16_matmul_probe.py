"""Probe (issue #26): the train step with every projection and the output layer multiplying bfloat16
inputs with float32 accumulation (forward and backward), against float32, and the PyTorch peer's
bfloat16 path (torch.autocast). One row per process; not yet a config switch of the model.

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 JAX_PLATFORMS=cpu \
      python bench/bf16_matmul_probe.py --side=jax --variant=bf16   # or --variant=float32, --side=torch

The custom VJP keeps the backward products in bfloat16 too: autodiff of a bfloat16-input einsum with
float32 output multiplies the float32 cotangent by a bfloat16 operand, which XLA:CPU runs in float32.
"""

import contextlib
import functools
import os
import string
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SIDE = flags.DEFINE_enum("side", "jax", ["jax", "torch"], "which framework's step")
_VARIANT = flags.DEFINE_enum("variant", "bf16", ["float32", "bf16"], "matmul inputs")
_MODE = flags.DEFINE_string("torch_mode", "compile", "bench/peer_rows.TORCH_MODES key")
_PRESET = flags.DEFINE_string("preset", "gato_79m", "experiments/<name>.py (jax)")
_BATCH = flags.DEFINE_integer("batch_size", 4, "sequences per step")
_LENGTH = flags.DEFINE_integer("seq_length", 1024, "sequence length")
_STEPS = flags.DEFINE_integer("timed_steps", 3, "timed steps after one untimed")
_IMAGES = flags.DEFINE_bool("images", True, "jax: the batch's image positions through the patch ResNet")


def narrow_einsum_fn(jax, jnp):
  """einsum(spec, x, w) with both inputs cast to `narrow`, accumulated in x's dtype, backward alike."""
  def expand(spec, ndim):
    ins, out = spec.split("->")
    a, b = ins.split(",")
    if "..." in a:
      free = "".join(c for c in string.ascii_letters if c not in spec)[: ndim - (len(a) - 3)]
      a, b, out = a.replace("...", free), b.replace("...", free), out.replace("...", free)
    return a, b, out

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
  def narrow_einsum(spec, x, w, narrow):
    return jnp.einsum(spec, x.astype(narrow), w.astype(narrow), preferred_element_type=x.dtype)

  def forward(spec, x, w, narrow):
    xn, wn = x.astype(narrow), w.astype(narrow)
    return jnp.einsum(spec, xn, wn, preferred_element_type=x.dtype), (xn, wn)

  def backward(spec, narrow, residuals, ct):
    xn, wn = residuals
    a, b, c = expand(spec, xn.ndim)
    ctn = ct.astype(narrow)
    return (jnp.einsum(f"{c},{b}->{a}", ctn, wn, preferred_element_type=ct.dtype),
            jnp.einsum(f"{a},{c}->{b}", xn, ctn, preferred_element_type=ct.dtype))

  narrow_einsum.defvjp(forward, backward)
  return narrow_einsum


def jax_step():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bench import train_step as ts  # pylint: disable=g-import-not-at-top
  from gato_jax.model import embedding, transformer  # pylint: disable=g-import-not-at-top
  if _VARIANT.value == "bf16":
    narrow = narrow_einsum_fn(jax, jnp)
    transformer.matmul = lambda spec, x, kernel, dtype: narrow(
        spec, x.astype(dtype), kernel.astype(dtype), jnp.bfloat16)
    embedding.EmbeddingFunction.attend = lambda self, h, vocab=None: narrow(
        "...e,ve->...v", h.astype(jnp.float32), self.token_table.embedding[...].astype(jnp.float32),
        jnp.bfloat16)
  overrides = ["dtype=float32", "remat_policy=none", "dropout_rate=0.0", "scan_layers=False",
               "fused_projections=True"]
  extra = {} if _IMAGES.value else {"max_image_tokens": 0}
  runner = ts.Runner(ts.load_config(_PRESET.value, **ts.parse_overrides(overrides), **extra),
                     batch_size=_BATCH.value, length=_LENGTH.value, gather_images=_IMAGES.value)
  return lambda: (runner.step(timed=False), float(runner.metrics["loss"]))[1]


def torch_step():
  import torch  # pylint: disable=g-import-not-at-top
  from bench import peer_rows  # pylint: disable=g-import-not-at-top
  shape = dict(layers=8, width=768, heads=24, mlp=3072, vocab=33024, window=256)
  step, _ = peer_rows.torch_row(_MODE.value, _BATCH.value, _LENGTH.value, shape, ["2048"])

  def run():
    with (torch.autocast("cpu", dtype=torch.bfloat16) if _VARIANT.value == "bf16"
          else contextlib.nullcontext()):
      return step()
  return run


def main(argv):
  del argv
  step = jax_step() if _SIDE.value == "jax" else torch_step()
  started = time.perf_counter()
  step()
  print(f"first step (compiles) {time.perf_counter() - started:.2f} s", flush=True)
  for _ in range(_STEPS.value):
    started = time.perf_counter()
    loss = step()
    print(f"{_SIDE.value} {_VARIANT.value} step {time.perf_counter() - started:.2f} s loss {loss:.4f}", flush=True)


if __name__ == "__main__":
  app.run(main)
