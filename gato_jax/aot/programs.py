"""The three programs a run executes, compiled ahead of time on any mesh: the train step, the acting
step (KV-cache decode at the evaluation batch) and the evaluation forward pass, each with what the
compiler says it needs per device and what it communicates."""

import dataclasses
import time

import jax
import jax.numpy as jnp

from gato_jax import partitioning
from gato_jax.acting.decode import Weights, act_step, token_features
from gato_jax.aot import hlo
from gato_jax.model import loss_and_metrics
from gato_jax.model.transformer import KVCache
from gato_jax.tokenizers.layout import TokenKind
from gato_jax.training import program as program_lib

ACT_CHUNK = 128  # positions fed per acting step: a generous observation plus its separator
ACT_DIMS = 8  # action tokens sampled per acting step (e.g. an 8-D continuous arm action)


@dataclasses.dataclass
class ProgramReport:
  """What one compiled program needs per device (bytes) and communicates per step."""
  name: str
  compile_s: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  collectives: dict  # hlo.summarize
  largest_buffers: list  # [(bytes, type, op name)] the biggest arrays the program creates
  flops_per_device: float = 0.0  # XLA's count (a scanned loop's body once: see bench/fit_table.py)

  @property
  def peak_bytes(self) -> int:
    """Live at once at the peak, per device: inputs, outputs not aliased onto them, temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def report(name: str, lowered, num_devices: int) -> ProgramReport:
  """Compiles `lowered` and reads the compiled program's memory, collectives and biggest arrays."""
  started = time.perf_counter()
  compiled = lowered.compile()
  seconds = time.perf_counter() - started
  memory = compiled.memory_analysis()
  text = compiled.as_text()
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return ProgramReport(
      name=name, compile_s=round(seconds, 1), argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes), alias_bytes=int(memory.alias_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes), code_bytes=int(memory.generated_code_size_in_bytes),
      collectives=hlo.summarize(hlo.collectives(text, num_devices)), largest_buffers=hlo.largest_buffers(text),
      flops_per_device=float(cost.get("flops", 0.0)))


def _spec_sharding(logical, shape, mesh, rules):
  return jax.sharding.NamedSharding(mesh, partitioning.logical_to_mesh_spec(logical, shape, mesh, rules=rules))


def lower_act_step(program, config, mesh, batch_size: int, context_length: int):
  """One acting step on a full KV cache of `context_length` slots for `batch_size` episodes: a chunk of
  ACT_CHUNK positions in, ACT_DIMS action tokens sampled (what GatoAgent runs every environment step)."""
  model_def = program.model_def
  struct = lambda shape, dtype, logical: jax.ShapeDtypeStruct(shape, dtype,
                                                              sharding=_spec_sharding(logical, shape, mesh,
                                                                                      program.rules))
  n = config.model.num_layers
  axes = KVCache.logical_axes(n)
  heads, head_dim = config.model.num_heads, config.model.head_dim
  dtype = jnp.dtype(config.model.dtype)
  per_layer = lambda shape, specs: tuple(struct(shape, dtype, tuple(spec)) for spec in specs)
  cache = KVCache(key=per_layer((batch_size * heads, head_dim, context_length), axes.key),
                  value=per_layer((batch_size * heads, context_length, head_dim), axes.value),
                  valid=struct((batch_size, context_length), jnp.bool_, tuple(axes.valid)),
                  index=struct((), jnp.int32, ()))
  one = jax.eval_shape(lambda: token_features(jnp.zeros((batch_size,), jnp.int32), TokenKind.ACTION))
  chunk = {k: struct((batch_size, ACT_CHUNK) + v.shape[2:], v.dtype,
                     ("activation_batch", "activation_length") + (None,) * (v.ndim - 2))
           for k, v in one.items()}
  replicated = partitioning.replicated(mesh)
  ranges = jax.ShapeDtypeStruct((ACT_DIMS, 2), jnp.int32, sharding=replicated)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
  temperature = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)

  def step(params, layers, model_state, cache, chunk, ranges, rng, temperature):
    model = model_def.merge(params, jax.random.key(0), model_state)
    key = jax.random.wrap_key_data(rng)
    return act_step(model, Weights(layers, layers), cache, chunk, ranges, key, temperature, greedy=False)

  state = program.abstract_state
  params, layers = _split_layers(state.params, n, mesh)
  with partitioning.axis_rules(mesh, program.rules):
    return jax.jit(step, donate_argnums=3).lower(params, layers, state.model_state, cache, chunk, ranges, rng,
                                                 temperature)


def _split_layers(params, num_layers: int, mesh):
  """The abstract params as GatoAgent acts with them (model/transformer.py's `split_layers`): each
  layer's weights their own arrays (the stacked spec less its layers axis), placeholders in the stack."""
  stacked = params["sequence_model"]["layers"]
  one = lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(*tuple(x.sharding.spec)[1:])))
  layers = [jax.tree.map(one, stacked) for _ in range(num_layers)]
  placeholder = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rest = dict(params, sequence_model=dict(params["sequence_model"], layers=jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((0,), x.dtype, sharding=placeholder), stacked)))
  return rest, layers


def lower_eval_forward(program, config, mesh, batch_size: int):
  """The offline-validation forward pass (loss and accuracies, no gradient) on `batch_size` sequences."""
  model_def = program.model_def
  with config.unlocked():
    eval_config = config.copy_and_resolve_references()
  eval_config.batch_size = batch_size
  batch = program_lib.abstract_batch(eval_config, mesh)

  def forward(params, model_state, batch):
    model = model_def.merge(params, jax.random.key(0), model_state)
    return loss_and_metrics(model(batch), batch)[1]

  state = program.abstract_state
  with partitioning.axis_rules(mesh, program.rules):
    return jax.jit(forward, out_shardings=partitioning.replicated(mesh)).lower(
        state.params, state.model_state, batch)


def round_to(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)

