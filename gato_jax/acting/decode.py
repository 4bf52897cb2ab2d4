"""The batched decode core of acting: sampling within an action dimension's ids, one whole step (an
observation chunk, then every action token) in one jitted call, with or without a KV cache, and the
same step over a pool of per-session caches (`pool_act`, the server's batch).

Episodes of a batch (`act_step`) advance in lockstep through one cache whose index is shared by the
batch. A pool (`init_pool`, `pool_act`, `pool_extend`) is one cache per session stacked on a leading
slot axis, each with its own index, so sessions that started at different times share one device call:
`act_step` is vmapped over the slots a call gathers.

Every function takes the model as (graphdef, params) from `split`: params = (state, Weights), each
decoder layer's weights in buffers of their own (model/transformer.py's `split_layers`: a batch-1
step is bound by reading the weights, and XLA:CPU copies slices of a stacked weight first), once as
they are for the one-position calls (action tokens) and optionally once more in a narrower
`chunk_dtype` for the many-position ones (observation chunks, prefills): see `Weights`.

`images` (static) says whether a task's chunks can hold IMAGE tokens; action tokens never do. Without
them the patch ResNet is not run (Gato.decode).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gato_jax.model import split_layers
from gato_jax.tokenizers import TokenKind, stream

PREFILL_BUCKET = 16  # prefill lengths are rounded up to this, so rolling compiles only a few shapes


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def token_features(tokens, kind: TokenKind):
  """[B] ids -> one position of model features per row: the stream builder's fields (no patch, local
  position 0), each [B, 1, ...]."""
  return {k: v[:, None] for k, v in stream.of_ids(tokens, kind, jnp).items()}


def sample_restricted(logits, lo, hi, rng, temperature, greedy: bool):
  """Samples ids in [lo, hi) from float logits [B, V] (argmax when greedy)."""
  ids = jnp.arange(logits.shape[-1])
  masked = jnp.where((ids >= lo) & (ids < hi), logits.astype(jnp.float32), -jnp.inf)
  if greedy:
    return jnp.argmax(masked, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, masked / jnp.maximum(temperature, 1e-6), axis=-1).astype(jnp.int32)


class Weights(NamedTuple):
  """The decoder layers' parameters for the two kinds of decode call.

  tokens  one position in all (an action token at batch 1): matrix-vector products, bound by reading
          the weights, which stay in their own dtype (a bfloat16 product at one row ran 10x slower
          than float32 on the AMX host: no matrix unit for a vector).
  chunks  more than one position (observation chunks, prefills, and action tokens of a batch): the same
          arrays, or a copy of the matrices in a narrower `chunk_dtype`, which model/transformer.py's
          `matmul` multiplies in that dtype with float32 accumulation. On the AMX host 16 [M, 768] x
          [768, 2048] products took, float32 / bfloat16: M=1 2.4 / 24 ms, M=2 3.3 / 2.3, M=16 7.2 /
          2.4, M=64 14.1 / 4.2; gato_79m's 41-position chunk 69 -> 42 ms.
  """
  tokens: list
  chunks: list

  def for_rows(self, rows: int) -> list:
    """The layers for a call of `rows` positions in all (static)."""
    return self.tokens if rows == 1 else self.chunks


def split(model, chunk_dtype=None) -> tuple[nnx.GraphDef, tuple]:
  """(graphdef, params) of `model` for the functions below; drop `model` afterwards (the layers'
  weights are copies). `chunk_dtype`: None, or a dtype narrower than the weights' for chunk calls."""
  graphdef, state, layers = split_layers(model)
  return graphdef, (state, Weights(layers, narrowed(layers, chunk_dtype)))


def narrowed(layers, dtype):
  """`layers` with every floating matrix cast to `dtype` where that is narrower (norms stay as they are)."""
  if dtype is None:
    return layers
  bits = jnp.finfo(dtype).bits
  narrower = lambda a: a.ndim >= 2 and jnp.issubdtype(a.dtype, jnp.floating) and jnp.finfo(a.dtype).bits > bits
  return jax.tree.map(lambda a: a.astype(dtype) if narrower(a) else a, layers)


def merge(graphdef, params):
  """(model, weights): the model whose decode / prefill / __call__ take `layers=weights.tokens` or
  `layers=weights.chunks`."""
  state, weights = params
  return nnx.merge(graphdef, state), weights


def has_images(spec) -> bool:
  """Whether a task's observations (so its chunks and prompts) can hold IMAGE tokens."""
  return any(f.modality == "image" for _, f in spec.observation_fields())


def init_cache(graphdef, params, *, batch_size, max_length):
  return merge(graphdef, params)[0].init_cache(batch_size, max_length)


def vocab_window(ranges) -> tuple[int, int]:
  """(start, size) of the ids a task's action tokens can take ([A, 2] ranges): the only logits acting
  needs (Gato.logits reads only those rows of the output layer)."""
  ranges = np.asarray(ranges).reshape(-1, 2)
  start = int(ranges[:, 0].min())
  return start, int(ranges[:, 1].max()) - start


def act_step(model, weights: Weights, cache, chunk, ranges, rng, temperature, greedy: bool, vocab=None,
             images: bool = True, rows: int | None = None):
  """Chunk [B, S] into the cache, then the A action tokens one at a time: ([B, A] ids, cache).

  The chunk is the previous step's last action token (when it is not in the cache yet), the
  observation and the separator. This step's last action token is sampled but not written: it opens
  the next step's chunk, which saves one decode call per step (half of them for 1-token actions).
  `rows`: the rows an action-token call multiplies at once, when a vmap hides them (pool_act); the
  batch otherwise. It picks the action tokens' weights (Weights.for_rows).
  """
  token_layers = weights.for_rows(rows or chunk["tokens"].shape[0])
  start = 0 if vocab is None else vocab[0]
  ranges = ranges - start  # ids relative to the logits' first one
  logits, cache = model.decode(chunk, cache, last_only=True, layers=weights.chunks, vocab=vocab, images=images)

  def one_token(carry, xs):
    logits, cache, finite = carry
    (lo, hi), key = xs
    token = sample_restricted(logits[:, -1], lo, hi, key, temperature, greedy) + start
    finite &= jnp.isfinite(logits).all()
    logits, cache = model.decode(token_features(token, TokenKind.ACTION), cache,
                                 last_only=True, layers=token_layers, vocab=vocab, images=False)
    return (logits, cache, finite), token

  keys = jax.random.split(rng, ranges.shape[0])
  # Unrolled: a loop would carry the cache, which XLA:CPU then copies every iteration.
  (logits, cache, finite), tokens = jax.lax.scan(one_token, (logits, cache, jnp.bool_(True)),
                                                 ((ranges[:-1, 0], ranges[:-1, 1]), keys[:-1]), unroll=True)
  last = sample_restricted(logits[:, -1], ranges[-1, 0], ranges[-1, 1], keys[-1], temperature, greedy) + start
  finite &= jnp.isfinite(logits).all()
  return jnp.concatenate([tokens.T, last[:, None]], axis=1), cache, finite


def act_cached(graphdef, params, cache, chunk, ranges, rng, temperature, *, greedy, vocab=None, images=True):
  return act_step(*merge(graphdef, params), cache, chunk, ranges, rng, temperature, greedy, vocab, images)


def prefill_and_act(graphdef, params, context, chunk, ranges, rng, temperature, *, max_length, greedy,
                    vocab=None, images=True):
  """A fresh cache of `max_length` slots filled with `context` [B, C], then a step: one dispatch."""
  model, weights = merge(graphdef, params)
  _, cache = model.prefill(context, max_length=max_length, last_only=True, layers=weights.chunks, images=images)
  return act_step(model, weights, cache, chunk, ranges, rng, temperature, greedy, vocab, images)


def _extend(model, weights: Weights, cache, start, context, images: bool = True):
  """`cache` continued from slot `start` with `context` [B, C]: what it held before `start` stays and is
  attended (a prompt kept across window rolls); slots at or past start + C are never attended again."""
  return model.decode(context, cache.replace(index=start), last_only=True, layers=weights.chunks,
                      images=images)[1]


def extend(graphdef, params, cache, start, context, *, images=True):
  """A batch's cache continued from slot `start` (int32 []) with `context` [B, C] (_extend)."""
  return _extend(*merge(graphdef, params), cache, start, context, images)


def act_uncached(graphdef, params, window, lengths, ranges, rng, temperature, *, greedy):
  """The baseline: a full causal pass over the right-padded window [B, L] for every action token."""
  model, weights = merge(graphdef, params)
  rows = jnp.arange(window["tokens"].shape[0])

  def one_token(carry, xs):
    window, lengths, finite = carry
    (lo, hi), key = xs
    logits = model(window, layers=weights.tokens)[rows, lengths - 1]
    token = sample_restricted(logits, lo, hi, key, temperature, greedy)
    window = dict(window)
    window["tokens"] = window["tokens"].at[rows, lengths].set(token)
    window["kinds"] = window["kinds"].at[rows, lengths].set(int(TokenKind.ACTION))
    return (window, lengths + 1, finite & jnp.isfinite(logits).all()), token

  keys = jax.random.split(rng, ranges.shape[0])
  (_, _, finite), tokens = jax.lax.scan(one_token, (window, lengths, jnp.bool_(True)),
                                        ((ranges[:, 0], ranges[:, 1]), keys))
  return tokens.T, finite




# ---------------------------------------------------------------------------------------------------
# A pool of per-session caches (the server): slot s is a batch-1 cache with its own index.
# ---------------------------------------------------------------------------------------------------

def init_pool(graphdef, params, *, slots, max_length):
  """`slots` empty batch-1 caches stacked on a leading axis (the KVCache's index becomes [slots])."""
  cache = init_cache(graphdef, params, batch_size=1, max_length=max_length)
  return jax.tree.map(lambda x: jnp.zeros((slots,) + x.shape, x.dtype), cache)


def pool_extend(graphdef, params, pool, slots, starts, contexts, *, images=True):
  """Slots [N] of the pool continued from slot positions `starts` [N] with contexts [N, 1, C]: what the
  slot held before `start` stays and is attended (a session's prompt, kept across window rolls);
  start 0 refills the slot (a prefill). Slots at or past start + C are never attended afterwards."""
  model, weights = merge(graphdef, params)
  caches = jax.tree.map(lambda p: p[slots], pool)
  caches = jax.vmap(lambda cache, start, context: _extend(model, weights, cache, start, context, images))(
      caches, starts, contexts)
  return jax.tree.map(lambda p, c: p.at[slots].set(c), pool, caches)


def pool_clear(pool, slot):
  """Slot `slot` emptied (index 0, no valid slot): a session that starts without a prompt."""
  return jax.tree.map(lambda p: p.at[slot].set(jnp.zeros_like(p[slot])), pool)


def pool_act(graphdef, params, pool, slots, chunks, ranges, seeds, steps, temperature, *, greedy, vocab=None,
             images=True):
  """One step of the sessions in `slots` [N]: chunks [N, 1, S] -> ([N, A] ids, pool, finite [N]).

  Each row samples with its own key, fold_in(key(seed), step), so a session's actions depend on its
  seed and step count only, never on which other sessions share the call. Padding rows point at a
  scratch slot that no session owns.
  """
  model, weights = merge(graphdef, params)
  caches = jax.tree.map(lambda p: p[slots], pool)

  def one(cache, chunk, seed, step):
    key = jax.random.fold_in(jax.random.key(seed), step)
    return act_step(model, weights, cache, chunk, ranges, key, temperature, greedy, vocab, images, rows=slots.shape[0])

  tokens, caches, finite = jax.vmap(one)(caches, chunks, seeds, steps)
  pool = jax.tree.map(lambda p, c: p.at[slots].set(c), pool, caches)
  return tokens[:, 0], pool, finite
