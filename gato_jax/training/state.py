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

import dataclasses
from typing import Any, Callable

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from gato_jax import partitioning

ModelFn = Callable[[nnx.Rngs], nnx.Module]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates applied so far
  params: Any  # pure dict of arrays
  model_state: Any  # pure dict (often empty) of non-param, non-rng variables
  opt_state: Any
  rng: jax.Array  # uint32[2] raw threefry key data (checkpoint-friendly, unlike typed keys)


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """Everything static needed to rebuild the model inside a jitted function."""
  graphdef: Any
  rng_template: Any  # pure dict of ShapeDtypeStructs of the model's rng-stream variables
  param_axes: Any  # pure dict: logical axis names per parameter (None = unannotated)
  abstract_params: Any  # pure dict of ShapeDtypeStructs
  module_types: dict = dataclasses.field(default_factory=dict)  # module path -> class name

  def merge(self, params, rng: jax.Array, model_state) -> nnx.Module:
    """The model with `params`, fresh rng streams derived from `rng` (a typed key) and `model_state`."""
    return nnx.merge(self.graphdef, params, fresh_rng_state(self.rng_template, rng), model_state)


def _split(model: nnx.Module):
  graphdef, params, rngs, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
  return graphdef, params, rngs, rest


def fresh_rng_state(template, rng: jax.Array):
  """Rng-stream variables for one step: every key is `rng` folded with its path, every count 0."""
  flat = jax.tree_util.tree_flatten_with_path(template)[0]
  treedef = jax.tree.structure(template)
  leaves = []
  for i, (_, leaf) in enumerate(flat):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      key = jax.random.fold_in(rng, i)
      leaves.append(jax.random.split(key, leaf.shape) if leaf.shape else key)
    else:
      leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
  return jax.tree.unflatten(treedef, leaves)


def typed_key(raw: jax.Array) -> jax.Array:
  return jax.random.wrap_key_data(raw, impl="threefry2x32")


def _rngs(seed_key: jax.Array) -> nnx.Rngs:
  params_key, dropout_key, default_key = jax.random.split(seed_key, 3)
  return nnx.Rngs(default_key, params=params_key, dropout=dropout_key)


def abstract_model(model_fn: ModelFn) -> tuple[ModelDef, Any]:
  """The ModelDef and the abstract model_state, without allocating a parameter."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: model_fn(_rngs(jax.random.key(0))))
  graphdef, params, rngs, rest = _split(model)
  model_def = ModelDef(graphdef=graphdef, rng_template=nnx.to_pure_dict(rngs),
                       param_axes=partitioning.logical_axes(params),
                       abstract_params=nnx.to_pure_dict(params),
                       module_types={tuple(path): type(m).__name__ for path, m in nnx.iter_modules(model)})
  return model_def, nnx.to_pure_dict(rest)


def _init_fn(model_fn: ModelFn, optimizer: optax.GradientTransformation):
  def init(seed: jax.Array) -> TrainState:
    key = typed_key(seed)
    init_key, train_key = jax.random.split(key)
    with nnx.use_eager_sharding(False):
      model = model_fn(_rngs(init_key))
    _, params, _, rest = _split(model)
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
