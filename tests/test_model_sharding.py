"""The model on an 8-device CPU mesh: abstract build, sharded init from logical names, and a sharded
forward pass / decode step equal to the unsharded ones."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gato_jax.model import Gato, KVCache
from testlib.model_testing import model_inputs, tiny_batch, tiny_config
from gato_jax.tokenizers.layout import VocabLayout

# A sample rules table in the t5x / MaxText style (gato_jax/partitioning.py owns the real one).
RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("patch_features", "fsdp"),
)


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=8 "
                "(the Makefile exports it)")
  return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def test_sharded_init_and_forward_equal_the_unsharded_ones(mesh):
  config = tiny_config()
  layout = VocabLayout.from_config(config.vocab)
  build = lambda: Gato(config.model, layout, nnx.Rngs(0))

  graphdef, abstract_state = nnx.split(nnx.eval_shape(build))
  logical = nnx.get_partition_spec(abstract_state)  # no rules active: the logical names
  shardings = nn.logical_to_mesh_sharding(logical, mesh, RULES)
  state = jax.jit(lambda: nnx.state(build()), out_shardings=shardings)()

  def spec(tree, *path):
    for key in path:
      tree = tree[key]
    return tree.get_value().sharding.spec
  assert spec(state, "embedding", "token_table", "embedding") == P("tensor", "fsdp")
  assert spec(state, "sequence_model", "layers", "attention", "query", "kernel") == P(
      None, "fsdp", "tensor", None)
  assert spec(state, "sequence_model", "layers", "mlp", "down", "kernel") == P(None, "fsdp", "tensor")

  reference_state = jax.jit(lambda: nnx.state(build()))()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(reference_state))

  batch = tiny_batch(config, batch_size=4, length=16)
  inputs = model_inputs(batch)
  forward = lambda s, f: nnx.merge(graphdef, s)(f)
  expected = jax.jit(forward)(reference_state, inputs)
  assert "sharding" not in jax.jit(forward).lower(reference_state, inputs).as_text().lower()

  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  sharded_inputs = jax.device_put(inputs, batch_sharding)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    lowered = jax.jit(forward).lower(state, sharded_inputs)
    assert lowered.as_text().count("sharding_constraint") >= 10  # the activation constraints
    logits = lowered.compile()(state, sharded_inputs)
  assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)

  # One prefill into a sharded cache: same logits as the unsharded pass.
  cache = jax.device_put(nnx.merge(graphdef, reference_state).init_cache(4, 32),
                         nn.logical_to_mesh_sharding(KVCache.logical_axes(2), mesh, RULES))
  assert cache.key[0].sharding.spec == P(("data", "fsdp"), None, None)
  decode = lambda s, f, c: nnx.merge(graphdef, s).decode(f, c)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    prefill_logits, cache = jax.jit(decode)(state, sharded_inputs, cache)
  np.testing.assert_allclose(prefill_logits, expected, rtol=1e-5, atol=1e-5)
  assert int(cache.index) == 16
