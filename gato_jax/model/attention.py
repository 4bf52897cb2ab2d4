"""Causal self-attention kernels behind `config.model.attention_impl`, one call signature for all.

Every kernel takes and returns [batch, length, heads, head_dim] and scales scores by 1/sqrt(head_dim):

  xla         jax.nn.dot_product_attention's XLA kernel: dense [L, L] scores, causal mask
  cudnn       jax.nn.dot_product_attention on cuDNN's fused flash kernel (NVIDIA GPUs)
  blocked     causal blocks of ATTENTION_BLOCK queries, each against only the keys up to its end (the
              masked half is never computed): for backends without a fused kernel, i.e. CPU
  pallas_tpu  the Pallas TPU splash-attention kernel (MaxText's default on TPU)
  flash_tpu   the Pallas TPU flash-attention kernel
  pallas_gpu  the Pallas (Triton) GPU flash-attention kernel
  auto        splash (pallas_tpu) on TPU when L is a multiple of KERNEL_BLOCK; cuDNN-or-XLA as JAX
              picks on GPU; blocked on CPU past one block

Decoding with a KV cache uses `cached_attention` (any backend): the chunk, written into the cache
first, against the cache's slots.

The Pallas kernels run per device: under a mesh they go through `jax.shard_map` with the specs the
active logical-axis rules give (batch, length, heads, kv), since XLA cannot partition a custom kernel
itself. On CPU, tests run the TPU kernels under `jax.experimental.pallas.tpu.force_tpu_interpret_mode()`
(it must cover lowering, so the whole jit call) and the GPU kernel with `INTERPRET = True`.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.model import logical as lg

ATTENTION_BLOCK = 256  # query rows per block of "blocked" (tuned on a 2-core CPU, L=1024)
KERNEL_BLOCK = 128  # Pallas kernels' query / key tile; L must be a multiple of it (or smaller)
INTERPRET = False  # the Pallas GPU kernel in interpret mode (its semantics on CPU, for tests)
IMPLS = ("auto", "xla", "cudnn", "blocked", "pallas_tpu", "flash_tpu", "pallas_gpu")


def blocked_causal_attention(q, k, v, block: int | None = None):
  """Causal attention in blocks of `block` queries, each against only the keys up to its last row:
  the masked upper triangle is neither computed nor stored (about (n + 1) / 2n of the dense scores
  for n blocks). Each block is jax.nn.dot_product_attention's XLA kernel with the block's causal
  mask, so the numerics are the dense kernel's up to summation order (masked keys add exact zeros).
  The point is CPU: the scores are memory- and exp-bound at head_dim 32, so work skipped is time saved.
  """
  length, block = q.shape[1], block or ATTENTION_BLOCK
  if length <= block:
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
  outputs = []
  for start in range(0, length, block):
    end = min(start + block, length)
    mask = np.arange(end)[None, :] <= np.arange(start, end)[:, None]  # static [Q, end]
    outputs.append(jax.nn.dot_product_attention(q[:, start:end], k[:, :end], v[:, :end],
                                                mask=mask[None, None], implementation="xla"))
  return jnp.concatenate(outputs, axis=1)


def _heads_first(fn):
  """Adapts a [B, H, L, D] kernel to [B, L, H, D] arrays."""
  def wrapped(q, k, v):
    swap = lambda x: jnp.swapaxes(x, 1, 2)
    return swap(fn(swap(q), swap(k), swap(v)))
  return wrapped


def _tile(length: int) -> int:
  if length % min(KERNEL_BLOCK, length):
    raise ValueError(f"attention_impl: the Pallas kernels need the sequence length ({length}) to be a "
                     f"multiple of {KERNEL_BLOCK} (or at most {KERNEL_BLOCK})")
  return min(KERNEL_BLOCK, length)


def flash_tpu(q, k, v):
  """Pallas TPU flash attention (jax.experimental.pallas.ops.tpu.flash_attention), causal."""
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # pylint: disable=g-import-not-at-top  # TPU only
  t = _tile(q.shape[1])
  sizes = fa.BlockSizes(block_q=t, block_k_major=t, block_k=t, block_b=1, block_q_major_dkv=t,
                        block_k_major_dkv=t, block_k_dkv=t, block_q_dkv=t, block_k_major_dq=t,
                        block_k_dq=t, block_q_dq=t)
  kernel = functools.partial(fa.flash_attention, causal=True, sm_scale=1.0 / math.sqrt(q.shape[-1]),
                             block_sizes=sizes)
  return _heads_first(kernel)(q, k, v)


def splash_tpu(q, k, v):
  """Pallas TPU splash attention with a causal mask (fully masked tiles skipped), as MaxText uses."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top  # TPU only
      splash_attention_kernel as sk, splash_attention_mask as sm)
  length, heads, t = q.shape[1], q.shape[2], _tile(q.shape[1])
  mask = sm.MultiHeadMask([sm.CausalMask((length, length)) for _ in range(heads)])
  sizes = sk.BlockSizes(block_q=t, block_kv=t, block_kv_compute=t, block_q_dkv=t, block_kv_dkv=t,
                        block_kv_dkv_compute=t, block_q_dq=t, block_kv_dq=t)
  scale = 1.0 / math.sqrt(q.shape[-1])

  def kernel(q, k, v):  # [B, H, L, D]; the splash kernel is per example. lax.map, not vmap: Pallas'
    # TPU interpreter (the CPU tests) cannot run a vmapped splash call; per device B is small anyway.
    mha = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes)
    return jax.lax.map(lambda args: mha(*args), ((q * scale).astype(q.dtype), k, v))
  return _heads_first(kernel)(q, k, v)


def flash_gpu(q, k, v):
  """Pallas (Triton) GPU flash attention (jax.experimental.pallas.ops.gpu.attention.mha), causal."""
  from jax.experimental.pallas.ops.gpu import attention as ga  # pylint: disable=g-import-not-at-top  # GPU-only kernel
  t = _tile(q.shape[1])
  sizes = ga.BlockSizes(block_q=t, block_k=t, block_q_dkv=t, block_kv_dkv=t, block_q_dq=t, block_kv_dq=t)
  return ga.mha(q, k, v, None, sm_scale=1.0 / math.sqrt(q.shape[-1]), causal=True, block_sizes=sizes,
                interpret=INTERPRET)


_PALLAS = {"pallas_tpu": splash_tpu, "flash_tpu": flash_tpu, "pallas_gpu": flash_gpu}


def _per_device(kernel):
  """shard_map over the current mesh with the rules' specs of [batch, length, heads, kv] (no mesh:
  the kernel as is). Sequence sharding is refused: these kernels need every key on the device."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return kernel
  spec = jax.sharding.PartitionSpec(*nn.logical_to_mesh_axes(lg.ATTENTION_HEADS))
  if spec[1] is not None:
    raise ValueError(f"attention_impl: a Pallas kernel cannot run with the sequence axis sharded "
                     f"({spec}); use attention_impl=xla or drop the length rule")
  return jax.shard_map(kernel, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)


def auto_impl(platform: str, length: int) -> str | None:
  """What attention_impl="auto" runs on `platform` at sequence length `length` (None: JAX's choice,
  cuDNN or XLA). The compile-only check (gato_jax/aot) asks it for the TPU it targets."""
  if platform == "cpu":
    return "blocked" if length > ATTENTION_BLOCK else None
  if platform == "tpu" and length % KERNEL_BLOCK == 0:
    return "pallas_tpu"  # splash: no [L, L] scores in HBM, masked tiles skipped (MaxText's default)
  return None


def causal_attention(q, k, v, impl: str):
  """Causal self-attention [B, L, H, D] -> [B, L, H, D] with kernel `impl` (see the module docstring)."""
  if impl == "auto":
    impl = auto_impl(jax.default_backend(), q.shape[1])
  if impl == "blocked":
    return blocked_causal_attention(q, k, v)
  if impl in _PALLAS:
    return _per_device(_PALLAS[impl])(q, k, v)
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)


def cached_attention(q, cache_keys, cache_values, mask):
  """A chunk's attention over one layer's cache, the chunk itself already written into it.

  q [B, S, N, H]; cache_keys [B * N, H, T] and cache_values [B * N, T, H] (KVCache's layout: one batch
  axis and each in the layout its matmul takes, so XLA:CPU neither transposes nor reshapes the cache,
  either of which made it copy the cache); mask bool [B, S, T]: the slots each chunk position attends
  (every row at least its own). Scores and softmax in float32.
  """
  batch, length, heads, head_dim = q.shape
  dtype = q.dtype
  q = jnp.swapaxes(q, 1, 2).reshape(batch * heads, length, head_dim)
  scores = jnp.einsum("xsh,xht->xst", q, cache_keys.astype(dtype), preferred_element_type=jnp.float32)
  scores = scores.reshape(batch, heads, length, -1) * head_dim ** -0.5
  weights = jax.nn.softmax(jnp.where(mask[:, None], scores, -jnp.inf), axis=-1).astype(dtype)
  out = jnp.einsum("xst,xth->xsh", weights.reshape(batch * heads, length, -1), cache_values.astype(dtype))
  return jnp.swapaxes(out.reshape(batch, heads, length, head_dim), 1, 2)
