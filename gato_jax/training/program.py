"""The train step's program from a config and a mesh: model, optimizer, abstract state, compiled step.

One home for what gato-train, bench/train_step.py and the compile-only check (gato_jax/aot) all build,
so that what is compiled for a TPU topology ahead of time is exactly what a run would execute.
"""

import dataclasses
import time

from absl import logging
import jax

from gato_jax import features, partitioning
from gato_jax.model import default_model_fn
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import optimizer, state as state_lib, step as step_lib


@dataclasses.dataclass
class TrainProgram:
  layout: VocabLayout
  model_fn: state_lib.ModelFn
  model_def: state_lib.ModelDef
  tx: object  # optax.GradientTransformation
  schedule: object  # optax.Schedule
  abstract_state: state_lib.TrainState  # ShapeDtypeStructs carrying their shardings
  train_step: object  # the un-jitted step
  rules: tuple  # the logical-axis rules table of config.mesh, passed with the mesh everywhere


def build(config, mesh, *, model_fn: state_lib.ModelFn | None = None,
          loss_fn: step_lib.LossFn = step_lib.gato_loss) -> TrainProgram:
  """Everything the train step is made of, nothing allocated."""
  layout = VocabLayout.from_config(config.vocab)
  model_fn = model_fn or default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  schedule = optimizer.learning_rate_schedule(config.optimizer, config.num_train_steps)
  rules = partitioning.rules_from_config(config.mesh)
  abstract_state = state_lib.abstract_train_state(model_fn, tx, mesh, model_def, rules=rules)
  train_step = step_lib.make_train_step(model_def, tx, schedule,
                                        grad_accum_steps=config.optimizer.grad_accum_steps, loss_fn=loss_fn)
  return TrainProgram(layout, model_fn, model_def, tx, schedule, abstract_state, train_step, rules)


def abstract_batch(config, mesh) -> dict:
  """ShapeDtypeStructs of one global batch of features, split over data x fsdp."""
  shapes = features.feature_shapes(config.data.sequence_length)
  shardings = partitioning.batch_shardings(shapes, mesh)
  return {name: jax.ShapeDtypeStruct((config.batch_size,) + shape, features.FEATURE_DTYPES[name],
                                     sharding=shardings[name]) for name, shape in shapes.items()}


def lower_train_step(train_step, abstract_state, mesh, config):
  """The train step lowered for the global batch with explicit shardings (state donated)."""
  batch = abstract_batch(config, mesh)
  jitted = step_lib.jit_train_step(train_step, jax.tree.map(lambda x: x.sharding, abstract_state),
                                   {k: v.sharding for k, v in batch.items()}, mesh)
  with partitioning.axis_rules(mesh, partitioning.rules_from_config(config.mesh)):
    return jitted.lower(abstract_state, batch)


def compile_train_step(train_step, abstract_state, mesh, config):
  """The train step compiled ahead of time (the loop's and bench/train_step.py's one way to build it)."""
  started = time.perf_counter()
  compiled = lower_train_step(train_step, abstract_state, mesh, config).compile()
  logging.info("Compiled the train step in %.1fs.", time.perf_counter() - started)
  return compiled
