"""Model FLOPs of a train step and the peak FLOP/s of the devices, for MFU.

Model FLOPs per train step (fwd + bwd, no rematerialisation counted, PaLM's convention):
  6 * N * T                        N = non-embedding parameters, T = tokens in the global batch
  + 12 * layers * heads * head_dim * L * T    attention scores and weighted values (no causal discount)
  + 6 * embed_dim * vocab * T      the output projection onto the shared vocabulary
Lookup tables (every `nnx.Embed`, any parameter with a `vocab` or `positions` axis) are not in N: they cost no
matmul FLOPs, and the output projection is counted by the last term whether tied or not.

Peak FLOP/s per device: dense bf16 figures of the accelerator (halved for float32 on GPUs, which run
f32 matmuls as TF32); `config.peak_flops_per_device` overrides. On CPU the peak is measured once per
process (cached) from dense matmuls of the model dtype running on all local devices at once, and
split evenly among the host's (possibly fake) devices.
"""

import functools
import math
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak per JAX device, matched against `device.device_kind` (lower case, first match).
# TPU v2/v3 expose each TensorCore as a device; v4 and v5p are megacore (one device per chip).
PEAK_FLOPS_PER_DEVICE = (
    ("tpu v2", 22.5e12),
    ("tpu v3", 61.5e12),
    ("tpu v4 lite", 137.5e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("tpu7x", 2307e12),
    ("h200", 989e12),
    ("h100", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a10g", 70e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("v100", 125e12),
)


def is_lookup_table(path: tuple, axes, module_types: dict) -> bool:
  return module_types.get(path[:-1]) == "Embed" or bool(axes and {"vocab", "positions"} & set(axes))


def param_counts(model_def) -> tuple[int, int]:
  """(total, non-embedding) parameter counts of a ModelDef (see the module docstring)."""
  total = non_embedding = 0
  flat_axes = dict(jax.tree_util.tree_flatten_with_path(
      model_def.param_axes, is_leaf=lambda x: x is None or isinstance(x, tuple))[0])
  for path, x in jax.tree_util.tree_flatten_with_path(model_def.abstract_params)[0]:
    n = math.prod(x.shape)
    total += n
    keys = tuple(getattr(k, "key", k) for k in path)
    if not is_lookup_table(keys, flat_axes.get(path), model_def.module_types):
      non_embedding += n
  return total, non_embedding


def train_flops_per_step(model_def, model_config, vocab_size: int, batch_size: int, length: int) -> float:
  tokens = batch_size * length
  _, non_embedding = param_counts(model_def)
  attention = 12 * model_config.num_layers * model_config.num_heads * model_config.head_dim * length
  return float(tokens * (6 * non_embedding + attention + 6 * model_config.embed_dim * vocab_size))


@functools.cache
def measure_host_flops(dtype: str = "float32", size: int = 1024, repeats: int = 5,
                       num_devices: int = 0) -> float:
  """Best-of-`repeats` FLOP/s of this host: one dense [size, size] matmul on every local device at
  once (fake CPU devices share the cores, so one device alone would not show the host's peak), or on
  the first `num_devices` of them (bench/train_step.py: a 1-device mesh's own peak)."""
  devices = jax.local_devices()[:num_devices or None]
  mesh = jax.sharding.Mesh(np.array(devices), ("d",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  x = jax.device_put(jnp.ones((len(devices), size, size), dtype), sharding)
  matmul = jax.jit(lambda a: a @ a, out_shardings=sharding)
  matmul(x).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return len(devices) * 2 * size**3 / best


def peak_flops_per_device(dtype: str = "float32", override: float = 0.0) -> float:
  """Peak FLOP/s of one device of this job (see the module docstring); 0 when unknown."""
  if override:
    return float(override)
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    # The fake CPU devices of one process share the host's cores.
    return measure_host_flops(dtype) / jax.local_device_count()
  kind = device.device_kind.lower()
  for name, peak in PEAK_FLOPS_PER_DEVICE:
    if name in kind:
      return peak / 2 if (device.platform == "gpu" and np.dtype(dtype) == np.float32) else peak
  logging.warning("Unknown peak FLOP/s for device kind %r: MFU is not reported; set "
                  "--config.peak_flops_per_device to enable it.", device.device_kind)
  return 0.0
