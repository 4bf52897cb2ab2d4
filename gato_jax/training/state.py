"""The train state (params, optimizer state, step, rng) and its creation directly in sharded form.

An NNX model is split three ways (`nnx.split(model, nnx.Param, nnx.RngState, ...)`):
  params       trained; kept as a pure nested dict so checkpoints read `params/<module path>/<name>`
  rng streams  NOT stored: the step rebuilds them from `TrainState.rng` and the step number, so
               dropout masks depend only on (seed, step) and a resumed run replays them exactly
  model_state  any other variable the model mutates (none for Gato today); stored and threaded
               through the step
The graph definition stays on the host (`ModelDef`); jitted functions close over it.

Nothing is materialised on one device: the abstract state comes from `jax.eval_shape`, its
shardings from the params' logical axes (gato_jax.partitioning), and the init itself is jitted with
those `out_shardings`, so each device computes only its own shards.
"""

from typing import Any

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from gato_jax import partitioning
# ModelDef and its helpers live in the model room (evaluation and acting rebuild models too).
from gato_jax.model.definition import (ModelDef, ModelFn, abstract_model,  # pylint: disable=unused-import
                                       fresh_rng_state, rngs_of, split_model)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates applied so far
  params: Any  # pure dict of arrays
  model_state: Any  # pure dict (often empty) of non-param, non-rng variables
  opt_state: Any
  rng: jax.Array  # uint32[2] raw threefry key data (checkpoint-friendly, unlike typed keys)


def typed_key(raw: jax.Array) -> jax.Array:
  return jax.random.wrap_key_data(raw, impl="threefry2x32")


def _init_fn(model_fn: ModelFn, optimizer: optax.GradientTransformation):
  def init(seed: jax.Array) -> TrainState:
    key = typed_key(seed)
    init_key, train_key = jax.random.split(key)
    with nnx.use_eager_sharding(False):
      model = model_fn(rngs_of(init_key))
    _, params, _, rest = split_model(model)
    params = nnx.to_pure_dict(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=nnx.to_pure_dict(rest),
                      opt_state=optimizer.init(params), rng=jax.random.key_data(train_key))
  return init


def state_shardings(abstract_state: TrainState, model_def: ModelDef, mesh, optimizer, *, rules) -> TrainState:
  """NamedShardings of every leaf: params by their logical axes under `rules`, optimizer state like its
  params, everything else replicated."""
  params = partitioning.tree_shardings(abstract_state.params, model_def.param_axes, mesh, rules=rules)
  replicated = partitioning.replicated(mesh)
  # Frozen parameters (config.freeze / train_only) have no optimizer state: optax.MaskedNode stands in
  # for them and stays as it is.
  opt_state = optax.tree_utils.tree_map_params(
      optimizer, lambda x, sharding: x if isinstance(x, optax.MaskedNode) else sharding,
      abstract_state.opt_state, params, transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  return TrainState(step=replicated, params=params,
                    model_state=jax.tree.map(lambda _: replicated, abstract_state.model_state),
                    opt_state=opt_state, rng=replicated)


def abstract_train_state(model_fn: ModelFn, optimizer, mesh, model_def: ModelDef, *, rules) -> TrainState:
  """ShapeDtypeStructs of the train state carrying their target shardings (for init and restore)."""
  shapes = jax.eval_shape(_init_fn(model_fn, optimizer), jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = state_shardings(shapes, model_def, mesh, optimizer, rules=rules)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def create_train_state(model_fn: ModelFn, optimizer, mesh, model_def: ModelDef, seed: int, *,
                       rules) -> TrainState:
  """A freshly initialised train state, each leaf created directly with its sharding."""
  abstract = abstract_train_state(model_fn, optimizer, mesh, model_def, rules=rules)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  seed_key = jax.random.key_data(jax.random.key(seed))
  with partitioning.axis_rules(mesh, rules):
    return jax.jit(_init_fn(model_fn, optimizer), out_shardings=shardings)(seed_key)
