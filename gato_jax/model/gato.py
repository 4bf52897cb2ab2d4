"""Gato: the embedding function and the sequence model composed, logits over the shared vocabulary,
a KV-cache decoding path for acting, and the masked next-token loss with per-kind metrics."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gato_jax.model import logical as lg
from gato_jax.model import value_init
from gato_jax.model.embedding import EmbeddingFunction, check_features
from gato_jax.model.options import ModelOptions
from gato_jax.model.transformer import KVCache, SequenceModel, dropout
from gato_jax.tokenizers.layout import TokenKind, VocabLayout


def default_model_fn(config, layout: VocabLayout):
  """`rngs -> Gato` of a full config: what training, evaluation and fine-tuning all build."""
  return lambda rngs: Gato(config.model, layout, rngs)


class Gato(nnx.Module):
  """Gato(config.model, layout, rngs): features (gato_jax/features.py) -> logits [B, L, vocab_size].

  `layout.vocab_size` sets the token table's rows and the logits' width. See gato_jax/model/__init__.py
  for the call conventions (training, acting with the KV cache, sharding).
  """

  def __init__(self, config, layout: VocabLayout, rngs: nnx.Rngs):
    options = config if isinstance(config, ModelOptions) else ModelOptions.from_config(config)
    self.options = options
    self.vocab_size = layout.vocab_size
    self.embedding = EmbeddingFunction(options, layout.vocab_size, rngs=rngs)
    self.sequence_model = SequenceModel(options, rngs=rngs)
    self.head = None if options.tie_embeddings else nnx.Linear(
        options.embed_dim, layout.vocab_size, use_bias=False, dtype=options.compute_dtype,
        param_dtype=options.weight_dtype, rngs=rngs,
        kernel_init=nnx.initializers.normal(stddev=1.0 / math.sqrt(options.embed_dim)),
        kernel_metadata=lg.axes(lg.EMBED, lg.VOCAB))
    # Only a non-default init draws a key, so "normal" models keep the exact params they had before.
    if options.continuous_init != "normal":
      table = self.embedding.token_table.embedding
      table.value = value_init.apply_continuous_init(table[...], rngs.params(), *layout.continuous_range(),
                                                     options.continuous_init)

  def __call__(self, features, *, train: bool = False, rng=None, layers=None):
    """Causal pass over whole sequences: logits float32 [B, L, vocab_size] predicting position t+1.

    train=True needs `rng` (dropout and patch-position sampling); train=False is deterministic
    (no dropout, patch positions at their interval's rounded mean).
    """
    batch, length = check_features(features, self.options, where="Gato")
    if train and rng is None:
      raise ValueError("Gato(train=True) needs rng=<a jax.random key> for dropout and patch positions")
    patch_rng, embed_rng, layers_rng = jax.random.split(rng, 3) if train else (None,) * 3
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    x = self.embedding(features, positions=positions, rng=patch_rng)
    x = dropout(x, self.options.dropout_rate, embed_rng)
    h, _ = self.sequence_model(x, rng=layers_rng, layers=layers)
    return self.logits(h)

  def logits(self, h, vocab: tuple[int, int] | None = None):
    """Final hidden states [..., E] -> float32 logits over the shared vocabulary, or with vocab=(start,
    size) over ids start .. start + size - 1 only (acting samples action ids from one range: the rest
    of the output layer, the text rows above all, need not be read)."""
    if self.head is None:
      logits = self.embedding.attend(h, vocab)
    else:
      kernel = self.head.kernel[...]
      if vocab is not None:
        kernel = jax.lax.slice_in_dim(kernel, vocab[0], vocab[0] + vocab[1], axis=1)
      logits = jnp.einsum("...e,ev->...v", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32)
    return lg.constrain(logits, lg.LOGITS)

  def init_cache(self, batch_size: int, max_length: int | None = None, dtype=None) -> KVCache:
    """An empty cache of `max_length` slots (default config.model.max_length), in the compute dtype."""
    o = self.options
    max_length = max_length or o.max_length
    if o.position_embedding == "learned" and max_length > o.max_length:
      raise ValueError(f"init_cache: max_length={max_length} exceeds config.model.max_length="
                       f"{o.max_length}, the size of the learned position table")
    dtype = dtype or o.compute_dtype
    empty = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(o.num_layers))
    rows = batch_size * o.num_heads
    return KVCache(key=empty((rows, o.head_dim, max_length)), value=empty((rows, max_length, o.head_dim)),
                   valid=jnp.zeros((batch_size, max_length), bool), index=jnp.zeros((), jnp.int32))

  def decode(self, features, cache: KVCache, *, last_only: bool = False, layers=None,
             vocab: tuple[int, int] | None = None, images: bool = True):
    """Feeds a chunk of S >= 1 positions after what `cache` holds; returns (logits, cache).

    Deterministic (evaluation mode). logits: float32 [B, S, vocab] (or [B, 1, vocab] with
    last_only), position s predicting the token after it, identical to the full causal pass over
    the cached sequence. PAD positions are written but never attended. Writing past the cache's end
    cannot raise under jit: logits of a chunk that does not fit are NaN, and the caller must roll
    the window first (see gato_jax/model/__init__.py). images=False: the chunk holds no IMAGE token,
    so the patch ResNet is not run (EmbeddingFunction).
    """
    batch, length = check_features(features, self.options, where="Gato.decode")
    if cache.batch_size != batch:
      raise ValueError(f"Gato.decode: features have batch {batch}, the cache {cache.batch_size}")
    if length > cache.max_length:
      raise ValueError(f"Gato.decode: chunk of {length} positions exceeds the cache's "
                       f"max_length={cache.max_length}")
    index = cache.index
    positions = index + jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    x = self.embedding(features, positions=positions, images=images)

    valid = jax.lax.dynamic_update_slice(cache.valid, features["kinds"] != TokenKind.PAD, (0, index))
    slots = jnp.arange(cache.max_length)
    causal = slots[None, :] <= positions[..., None]  # [B, S, T]
    own = slots[None, :] == positions[..., None]
    mask = causal & (valid[:, None, :] | own)  # own slot: no row is ever fully masked
    h, (keys, values) = self.sequence_model(x, cache=(cache.key, cache.value, mask, index), layers=layers)
    if last_only:
      h = h[:, -1:]
    logits = self.logits(h, vocab)
    overflow = index + length > cache.max_length
    logits = jnp.where(overflow, jnp.nan, logits)
    new_cache = KVCache(key=keys, value=values, valid=valid, index=index + length)
    return logits, new_cache

  def prefill(self, features, *, max_length: int | None = None, last_only: bool = False, layers=None,
              images: bool = True):
    """A fresh cache of `max_length` slots filled with `features`: (logits, cache)."""
    cache = self.init_cache(features["tokens"].shape[0], max_length)
    return self.decode(features, cache, last_only=last_only, layers=layers, images=images)


def loss_and_metrics(logits, batch):
  """Masked next-token cross-entropy and per-kind metrics; a pure function of logits and the batch.

  The weight of a position is loss_mask * [target kind is TEXT or ACTION]: observation tokens
  (images, observation text / discrete / continuous values, separators) are never targets, even if a
  loss_mask says otherwise. The loss is the weighted mean over the batch's positions.

  Returns (loss, metrics) with float32 scalars: loss, text_loss, action_loss, text_accuracy,
  action_accuracy (the target has the largest logit of the whole vocabulary, ties counted correct;
  0 where a kind has no targets), num_targets,
  num_text_targets, num_action_targets, and tokens_<kind> for every TokenKind (input positions of
  that kind; from batch["kinds"], or target_kinds when kinds are absent).
  """
  logits = logits.astype(jnp.float32)
  targets, target_kinds = batch["targets"], batch["target_kinds"]
  if logits.shape[:-1] != targets.shape:
    raise ValueError(f"loss_and_metrics: logits {logits.shape} do not match targets {targets.shape}")
  # One max over the vocabulary serves both the stable log-sum-exp and the accuracy: an argmax is a
  # second, variadic (value, index) reduction, 6% of the CPU demo's step (bench/results/PROFILE.md).
  max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  log_z = max_logit + jnp.log(jnp.sum(jnp.exp(logits - max_logit[..., None]), axis=-1))
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = log_z - target_logit
  correct = (target_logit >= max_logit).astype(jnp.float32)
  is_text = (target_kinds == TokenKind.TEXT).astype(jnp.float32)
  is_action = (target_kinds == TokenKind.ACTION).astype(jnp.float32)
  mask = batch["loss_mask"].astype(jnp.float32)

  def weighted_mean(values, weight):
    total = jnp.sum(weight)
    return jnp.sum(values * weight) / jnp.maximum(total, 1.0), total

  loss, num_targets = weighted_mean(nll, mask * (is_text + is_action))
  text_loss, num_text = weighted_mean(nll, mask * is_text)
  action_loss, num_action = weighted_mean(nll, mask * is_action)
  metrics = {
      "loss": loss,
      "text_loss": text_loss,
      "action_loss": action_loss,
      "text_accuracy": weighted_mean(correct, mask * is_text)[0],
      "action_accuracy": weighted_mean(correct, mask * is_action)[0],
      "num_targets": num_targets,
      "num_text_targets": num_text,
      "num_action_targets": num_action,
  }
  kinds = batch.get("kinds", target_kinds)
  for kind in TokenKind:
    metrics[f"tokens_{kind.name.lower()}"] = jnp.sum(kinds == kind).astype(jnp.float32)
  return loss, metrics
