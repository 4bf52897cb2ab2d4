"""The static description of an NNX model (graph definition, parameter shapes and logical axes, rng
template) and how to build it without allocating a parameter: what training, evaluation and acting
rebuild the model from inside their jitted functions.

An NNX model is split three ways (`nnx.split(model, nnx.Param, nnx.RngState, ...)`):
  params       a pure nested dict, so checkpoints read `params/<module path>/<name>`
  rng streams  not stored: rebuilt from one key per call (`fresh_rng_state`)
  model_state  any other variable the model mutates (none for Gato today)
"""

import dataclasses
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp

from gato_jax import partitioning

ModelFn = Callable[[nnx.Rngs], nnx.Module]


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


def split_model(model: nnx.Module):
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


def rngs_of(seed_key: jax.Array) -> nnx.Rngs:
  params_key, dropout_key, default_key = jax.random.split(seed_key, 3)
  return nnx.Rngs(default_key, params=params_key, dropout=dropout_key)


def abstract_model(model_fn: ModelFn) -> tuple[ModelDef, Any]:
  """The ModelDef and the abstract model_state, without allocating a parameter."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: model_fn(rngs_of(jax.random.key(0))))
  graphdef, params, rngs, rest = split_model(model)
  model_def = ModelDef(graphdef=graphdef, rng_template=nnx.to_pure_dict(rngs),
                       param_axes=partitioning.logical_axes(params),
                       abstract_params=nnx.to_pure_dict(params),
                       module_types={tuple(path): type(m).__name__ for path, m in nnx.iter_modules(model)})
  return model_def, nnx.to_pure_dict(rest)
