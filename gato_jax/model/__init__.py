"""Gato's network as Flax NNX modules: embedding function, sequence model, logits, loss, KV cache.

Building (never allocates at full size unless you ask):

  from gato_jax.model import Gato, loss_and_metrics
  layout = VocabLayout.from_config(config.vocab)
  model = Gato(config.model, layout, nnx.Rngs(params=seed))          # concrete, small models / tests
  abstract = nnx.eval_shape(lambda: Gato(config.model, layout, nnx.Rngs(0)))   # shapes only

Training (a pure function of the split state, for jax.jit with explicit shardings):

  graphdef, params = nnx.split(model)   # params: nnx.State of nnx.Param (the only variable type)
  def loss_fn(params, batch, rng):
    logits = nnx.merge(graphdef, params)(batch, train=True, rng=rng)   # float32 [B, L, vocab]
    return loss_and_metrics(logits, batch)                              # (loss, metrics dict)

  `train=True` needs `rng` (dropout, patch positions sampled inside their interval); evaluation is
  `model(batch)` (deterministic, patch positions at the interval's rounded mean).

Sharding. Every parameter carries logical axis names (gato_jax/model/logical.py lists them: embed,
heads, kv, mlp, vocab, layers, conv_in, conv_out, patch_features, positions) as the
NNX `out_sharding` metadata, with eager sharding off: building the model never needs a mesh.

  * Parameters' logical PartitionSpecs: `nnx.get_partition_spec(abstract_state)` called with NO rules
    context returns PartitionSpec(<logical names>) per parameter, e.g. token table
    P('vocab', 'embed'), stacked attention query kernel P('layers', 'embed', 'heads', 'kv').
    Map them to mesh shardings with flax's priority-based resolver, the same one the activation
    constraints use:  `flax.linen.logical_to_mesh_sharding(specs, mesh, rules)` (names without a
    rule, or whose mesh axis is already used by an earlier dimension, stay unsharded). Avoid
    calling nnx.get_partition_spec inside a rules context: NNX then substitutes names one by one
    and keeps unknown names verbatim, without that resolution.
  * Sharded init: `jax.jit(lambda: nnx.state(Gato(...)), out_shardings=shardings)()` creates the
    parameters already sharded (tests/test_model_sharding.py does exactly this on 8 CPU devices).
  * Activations: the modules call `logical.constrain(x, names)` (flax.linen.with_logical_constraint)
    with activation names kept apart from the parameters' (activation_batch, activation_length,
    activation_embed / _heads / _kv / _mlp / _vocab) on the residual stream, q/k/v, the GEGLU
    hidden and the logits. They take effect when the
    step is traced inside `with jax.set_mesh(mesh), flax.linen.logical_axis_rules(rules):` (a mesh
    whose axes are AxisType.Auto) and are no-ops otherwise.
  * The KV cache's names: `KVCache.logical_axes(num_layers)` (per layer: activation_batch,
    activation_heads, activation_length, activation_kv).

Acting with the KV cache (evaluation mode, one position = one token's features, patches included):

  graphdef, params = nnx.split(model)
  @functools.partial(jax.jit, donate_argnames="cache")
  def step(params, features, cache):
    return nnx.merge(graphdef, params).decode(features, cache, last_only=True)
  cache = model.init_cache(batch_size, max_length)          # KVCache pytree; index 0, no valid slot
  logits, cache = step(params, prompt_features, cache)      # prefill: a chunk of S positions
  logits, cache = step(params, one_position_features, cache)  # then S = 1 at a time

  `decode` returns logits [B, S, vocab] (or [B, 1, vocab] with last_only) equal to the full causal
  pass over everything written so far. The cache index is shared by the batch: left-pad ragged
  prompts with PAD tokens (kind PAD), which are written but never attended. Rolling the window:
  the cache has `max_length` slots and writing past them yields NaN logits (an error cannot be raised
  under jit), so the agent keeps its history of features and, before a chunk of S positions would
  pass the end (it counts positions on the host: index = positions written since the last prefill),
  re-prefills a fresh cache with the last K positions of its history (e.g. K = max_length - room for
  the next timestep, cut at a timestep boundary). With the paper's position_embedding="none" only
  the local observation / action / patch codes carry position, so the re-prefilled cache is exactly
  the cache of that window. Each distinct chunk length S compiles once.

  Batch-1 acting reads every weight once per call: `graphdef, state, layers = split_layers(model)`
  gives each decoder layer's parameters their own buffers (XLA:CPU copies slices of the stacked
  ones first); pass `layers=layers` to decode / prefill / __call__ (acting/decode.py does).

Dtypes: parameters in `param_dtype` (float32), activations in `dtype` (bfloat16 on accelerators);
logits and the loss are float32.
"""

from gato_jax.model.embedding import (EmbeddingFunction, PatchEncoder, check_features,
                                      patch_position_index)
from gato_jax.model.gato import Gato, default_model_fn, loss_and_metrics
from gato_jax.model.logical import ALL_NAMES as LOGICAL_AXIS_NAMES
from gato_jax.model.logical import axes, constrain
from gato_jax.model.options import ModelOptions
from gato_jax.model.transformer import DecoderLayer, KVCache, SequenceModel, split_layers

__all__ = [
    "EmbeddingFunction", "PatchEncoder", "check_features", "patch_position_index",
    "Gato", "default_model_fn", "loss_and_metrics", "LOGICAL_AXIS_NAMES", "axes", "constrain", "ModelOptions",
    "DecoderLayer", "KVCache", "SequenceModel", "split_layers",
]
