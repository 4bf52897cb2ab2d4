"""Gato's sequence model: a pre-norm decoder-only transformer with GEGLU, stacked layers and a KV cache.

Layers are always stored stacked (every parameter has a leading `layers` axis, created by nnx.vmap);
`scan_layers` only chooses how the forward pass runs them: `jax.lax.scan` over the stack (one layer
compiled once: fast compiles at depth) or an unrolled Python loop over slices (XLA may fuse across
layers). The parameter tree, and so every checkpoint, is the same either way.

Normalisation: the paper only says "pre-norm"; LayerNorm (with bias) is the default, as in the
pre-norm decoders of Gato's time (GPT-2, ViT); `norm_type="rms_norm"` switches to RMSNorm (Gopher,
T5), which is marginally cheaper. Attention has no biases and no attention-probability dropout (the
fused kernels of jax.nn.dot_product_attention have none); dropout is applied to each residual branch.
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from gato_jax.model import attention
from gato_jax.model import logical as lg
from gato_jax.model.options import REMAT_POLICIES, ModelOptions


def dropout(x, rate: float, rng):
  """Inverted dropout; identity when `rng` is None (evaluation) or the rate is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def matmul(spec: str, x, kernel, dtype):
  """einsum(spec, x, kernel) in the compute `dtype`. A kernel stored narrower than it (acting's
  bfloat16 copy of float32 weights for chunks of many positions, decode.split) multiplies in its own
  dtype and accumulates in `dtype`: on a CPU with AMX a 41-row bfloat16 product with float32
  accumulation ran 4.4x faster than in float32, while bfloat16 throughout (outputs, norms) was slower."""
  if jnp.finfo(kernel.dtype).bits < jnp.finfo(dtype).bits:
    return jnp.einsum(spec, x.astype(kernel.dtype), kernel, preferred_element_type=dtype)
  return jnp.einsum(spec, x.astype(dtype), kernel.astype(dtype))


def make_norm(options: ModelOptions, rngs: nnx.Rngs):
  dtypes = dict(dtype=options.compute_dtype, param_dtype=options.weight_dtype, epsilon=1e-6)
  if options.norm_type == "rms_norm":
    return nnx.RMSNorm(options.embed_dim, rngs=rngs, scale_metadata=lg.axes(lg.EMBED), **dtypes)
  return nnx.LayerNorm(options.embed_dim, rngs=rngs, scale_metadata=lg.axes(lg.EMBED),
                       bias_metadata=lg.axes(lg.EMBED), **dtypes)


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for decoding, as a plain pytree (pass it through jit).

  key         one [batch * heads, head_dim, max_length] array per layer (a tuple)
  value       one [batch * heads, max_length, head_dim] array per layer
  Each layer's cache is a buffer of its own (a slice of a stacked [layers, ...] cache was a copy on
  XLA:CPU), laid out as attention.cached_attention's matmuls read it: batch and heads as one axis
  (at batch 1 a separate batch axis is dropped by a reshape before the matmul, and XLA:CPU then
  copied the cache around the in-place write), head_dim before slots for the keys.
  valid       bool [batch, max_length]: slots holding a non-PAD token (PAD slots are never attended,
              so a batch of prompts may be left-padded with PAD tokens)
  index       int32 []: the next slot to write, shared by the batch
  """
  key: tuple
  value: tuple
  valid: jax.Array
  index: jax.Array

  @property
  def max_length(self) -> int:
    return self.valid.shape[1]

  @property
  def batch_size(self) -> int:
    return self.valid.shape[0]

  @classmethod
  def logical_axes(cls, num_layers: int) -> "KVCache":
    """A KVCache of logical PartitionSpecs: `flax.linen.logical_to_mesh_sharding(KVCache.logical_axes(
    num_layers), mesh, rules)` gives the cache's shardings under the same rules as the activations."""
    # batch * heads is batch-major: sharding it by the batch rule keeps each episode's rows together.
    key = (P(lg.BATCH, lg.ACT_KV, lg.LENGTH),) * num_layers
    value = (P(lg.BATCH, lg.LENGTH, lg.ACT_KV),) * num_layers
    return cls(key=key, value=value, valid=P(lg.BATCH, lg.LENGTH), index=P())


class Attention(nnx.Module):
  """Multi-head causal self-attention; the kernel is config.model.attention_impl (model/attention.py)."""

  def __init__(self, options: ModelOptions, *, rngs: nnx.Rngs):
    o = options
    e, h, d = o.embed_dim, o.num_heads, o.head_dim
    einsum = functools.partial(nnx.Einsum, dtype=o.compute_dtype, param_dtype=o.weight_dtype,
                               rngs=rngs)
    in_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0, out_axis=(1, 2))
    out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(1, 2), out_axis=0)
    qkv = lg.axes(lg.EMBED, lg.HEADS, lg.KV)
    self.query = einsum("ble,ehd->blhd", (e, h, d), kernel_init=in_init, kernel_metadata=qkv)
    self.key = einsum("ble,ehd->blhd", (e, h, d), kernel_init=in_init, kernel_metadata=qkv)
    self.value = einsum("ble,ehd->blhd", (e, h, d), kernel_init=in_init, kernel_metadata=qkv)
    # Embed first in every layer kernel: XLA:TPU then sends an FSDP layer gradient out of the backward
    # scan as a reduce-scatter; with embed last ([h, d, e], [mlp, e]) it all-reduced the whole bf16
    # gradient and sliced it (compiled for v5e; docs/DECISIONS.md, "Embed-major layer kernels").
    self.out = einsum("blhd,ehd->ble", (e, h, d), kernel_init=out_init, kernel_metadata=qkv)
    self.attention_impl = o.attention_impl
    self.fused = o.fused_projections

  def project(self, x):
    """q, k, v [B, S, H, D]: three matmuls, or with fused_projections one against the three kernels
    concatenated (a wider matmul and one input-gradient matmul in the backward pass; same parameters)."""
    kernels = [m.kernel[...] for m in (self.query, self.key, self.value)]
    if not self.fused:
      return tuple(matmul("ble,ehd->blhd", x, k, self.query.dtype) for k in kernels)
    return jnp.split(matmul("ble,ehd->blhd", x, jnp.concatenate(kernels, axis=1), self.query.dtype), 3, axis=2)

  def __call__(self, x, cache=None):
    """x [B, S, E] -> ([B, S, E], the layer's updated (keys, values) when `cache` is given).

    cache: None for a causal pass over the whole sequence, else (keys [B * H, D, T], values [B * H, T, D],
    mask bool [B, S, T], index): the layer's cache, the chunk's slots starting at `index`, and what each
    chunk position attends once the chunk is written there. Returns the updated (keys, values): the
    chunk is written first and the cache read after, so XLA updates a donated cache in place (reading
    it first and writing after made XLA:CPU copy it to keep the reads right).
    """
    q, k, v = (lg.constrain(y, lg.ATTENTION_HEADS) for y in self.project(x))
    if cache is None:
      y, new_cache = attention.causal_attention(q, k, v, self.attention_impl), None
    else:
      keys, values, mask, index = cache
      b, s_, h, d = k.shape
      k = jnp.transpose(k, (0, 2, 3, 1)).reshape(b * h, d, s_).astype(keys.dtype)
      v = jnp.swapaxes(v, 1, 2).reshape(b * h, s_, d).astype(values.dtype)
      keys = jax.lax.dynamic_update_slice(keys, k, (0, 0, index))
      values = jax.lax.dynamic_update_slice(values, v, (0, index, 0))
      y, new_cache = attention.cached_attention(q, keys, values, mask), (keys, values)
    y = lg.constrain(y, lg.ATTENTION_HEADS)
    return lg.constrain(self.output(y), lg.ACTIVATION), new_cache

  def output(self, y):
    """y [B, S, H, D] -> [B, S, E] through the out kernel [E, H, D] seen as [E, H * D] (a free reshape).
    As the 4-d einsum "blhd,ehd->ble", XLA:CPU copied the kernel and y into (d, h) order on every call
    (a 1-token 79M decode 23 -> 17.5 ms without it; the v5e train step compiles to the same memory)."""
    kernel = self.out.kernel[...]
    e, h, d = kernel.shape
    return matmul("blk,ek->ble", y.reshape(*y.shape[:2], h * d), kernel.reshape(e, h * d), self.out.dtype)


class GegluMlp(nnx.Module):
  """GEGLU feed-forward: (gelu(x W_gate) * x W_up) W_down, both hidden branches `mlp_dim` wide."""

  def __init__(self, options: ModelOptions, *, rngs: nnx.Rngs):
    o = options
    linear = functools.partial(nnx.Linear, use_bias=False, dtype=o.compute_dtype,
                               param_dtype=o.weight_dtype, rngs=rngs)
    hidden = lg.axes(lg.EMBED, lg.MLP)
    self.gate = linear(o.embed_dim, o.mlp_dim, kernel_metadata=hidden)
    self.up = linear(o.embed_dim, o.mlp_dim, kernel_metadata=hidden)
    # [embed, mlp] like gate and up (see Attention.out for why embed comes first).
    self.down = nnx.Einsum("blm,em->ble", (o.embed_dim, o.mlp_dim), dtype=o.compute_dtype,
                           param_dtype=o.weight_dtype, kernel_metadata=hidden, rngs=rngs,
                           kernel_init=nnx.initializers.lecun_normal(in_axis=1, out_axis=0))
    self.fused = o.fused_projections

  def __call__(self, x):
    dtype = self.gate.dtype
    if self.fused:  # one [E, 2 * mlp] matmul for both branches (see Attention.project)
      kernel = jnp.concatenate([self.gate.kernel[...], self.up.kernel[...]], axis=1)
      gate, up = jnp.split(matmul("...e,em->...m", x, kernel, dtype), 2, axis=-1)
    else:
      gate, up = (matmul("...e,em->...m", x, m.kernel[...], dtype) for m in (self.gate, self.up))
    h = jax.nn.gelu(lg.constrain(gate, lg.MLP_HIDDEN)) * lg.constrain(up, lg.MLP_HIDDEN)
    return lg.constrain(matmul("blm,em->ble", h, self.down.kernel[...], dtype), lg.ACTIVATION)


class DecoderLayer(nnx.Module):
  """x + dropout(attention(norm(x))), then x + dropout(mlp(norm(x)))."""

  def __init__(self, options: ModelOptions, *, rngs: nnx.Rngs):
    self.attention_norm = make_norm(options, rngs)
    self.attention = Attention(options, rngs=rngs)
    self.mlp_norm = make_norm(options, rngs)
    self.mlp = GegluMlp(options, rngs=rngs)
    self.dropout_rate = options.dropout_rate

  def __call__(self, x, rng=None, cache=None):
    attention_rng, mlp_rng = jax.random.split(rng) if rng is not None else (None, None)
    y, new_cache = self.attention(self.attention_norm(x), cache)
    x = lg.constrain(x + dropout(y, self.dropout_rate, attention_rng), lg.ACTIVATION)
    y = self.mlp(self.mlp_norm(x))
    x = lg.constrain(x + dropout(y, self.dropout_rate, mlp_rng), lg.ACTIVATION)
    return x, new_cache


class SequenceModel(nnx.Module):
  """`num_layers` stacked decoder layers and the final norm: [B, S, E] -> [B, S, E]."""

  def __init__(self, options: ModelOptions, *, rngs: nnx.Rngs):
    self.num_layers = options.num_layers
    self.scan_layers = options.scan_layers
    self.remat_policy = options.remat_policy

    @nnx.split_rngs(splits=options.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: lg.LAYERS})
    def stacked(rngs):
      return DecoderLayer(options, rngs=rngs)

    self.layers = stacked(rngs)
    self.final_norm = make_norm(options, rngs)

  def __call__(self, x, *, rng=None, cache=None, layers=None):
    """Runs every layer.

    Args:
      x: [B, S, E] embeddings.
      rng: dropout key when training, else None.
      cache: None for a causal pass over x, else (keys: a tuple of one [B * H, D, T] per layer,
        values: of one [B * H, T, D], mask bool [B, S, T], index) (Attention.__call__).
      layers: None, or every layer's parameters as separate buffers (`split_layers`), run unrolled
        in place of the stacked ones.
    Returns:
      (final-normed [B, S, E], the updated (keys, values) tuples, or None without a cache).
    """
    graphdef, params = nnx.split(self.layers)
    rngs = jax.random.split(rng, self.num_layers) if rng is not None else None
    # The scan reads the per-layer caches stacked (a copy; the unrolled paths read them in place).
    kv = None if cache is None else (tuple(cache[:2]) if not self.scan_layers or layers is not None
                                     else tuple(jnp.stack(c) for c in cache[:2]))
    shared = None if cache is None else cache[2:]

    def layer(x, xs):
      layer_params, layer_rng, layer_kv = xs
      layer_cache = None if layer_kv is None else (*layer_kv, *shared)
      return nnx.merge(graphdef, layer_params)(x, layer_rng, layer_cache)

    # Decoding is never differentiated: remat there only adds its barriers (with them XLA:CPU copied
    # each layer's cache twice per call).
    policy = REMAT_POLICIES[self.remat_policy] if cache is None else None
    if policy is not None:
      layer = jax.checkpoint(layer, policy=policy, prevent_cse=not self.scan_layers)
    xs = (params, rngs, kv)
    if self.scan_layers and layers is None:
      x, new_kv = jax.lax.scan(layer, x, xs)
      if new_kv is not None:
        new_kv = tuple(tuple(a[i] for i in range(self.num_layers)) for a in new_kv)
    else:
      outputs = []
      for i in range(self.num_layers):
        layer_params = layers[i] if layers is not None else jax.tree.map(lambda a, i=i: a[i], params)
        layer_rng = None if rngs is None else rngs[i]
        layer_kv = None if kv is None else (kv[0][i], kv[1][i])
        x, layer_kv = layer(x, (layer_params, layer_rng, layer_kv))
        outputs.append(layer_kv)
      new_kv = None if cache is None else (tuple(o[0] for o in outputs), tuple(o[1] for o in outputs))
    return self.final_norm(x), new_kv


def split_layers(model) -> tuple[nnx.GraphDef, nnx.State, list]:
  """(graphdef, state, layers) of a Gato for decoding: each decoder layer's parameters sliced out of
  the stack once into buffers of their own (`layers`), and empty placeholders left in `state`.

  Why: at batch 1 a decode step is a matrix-vector product per weight, bound by reading the weights,
  and XLA:CPU copies a slice of a stacked weight before its dot (static slices) or dynamic-slices
  it into a new buffer (scan): 8 layers' [768, 8192] kernels took 59 ms read as static slices,
  26 ms in a scan and 13 ms as separate arrays on this 2-core host. Pass `layers` to Gato.decode /
  prefill / __call__ (which then run the layers unrolled); the caller should drop the stacked model,
  or the parameters are held twice.
  """
  graphdef, state = nnx.split(model)
  stacked = state["sequence_model"]["layers"]
  layers = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(model.options.num_layers)]
  state["sequence_model"]["layers"] = jax.tree.map(lambda a: jnp.zeros((0,), a.dtype), stacked)
  return graphdef, state, layers

