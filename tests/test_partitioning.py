"""Mesh construction and refusal messages, the rules table, and the shardings derived from it."""

import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from gato_jax import partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import loop, state as state_lib
import test_training_support as support


def mesh_config(data=-1, fsdp=1, tensor=1):
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def test_fill_axis_takes_the_remaining_devices():
  assert partitioning.resolve_mesh_shape(mesh_config(-1, 2, 2), 8) == (2, 2, 2)
  assert partitioning.resolve_mesh_shape(mesh_config(2, -1, 1), 8) == (2, 4, 1)
  assert partitioning.resolve_mesh_shape(mesh_config(1, 1, -1), 8) == (1, 1, 8)


@pytest.mark.parametrize("shape,message", [
    ((3, 2, 1), "needs 6 devices but there are 8"),
    ((-1, 3, 1), "do not divide the 8 devices"),
    ((-1, -1, 1), "at most one axis may be -1"),
    ((0, 1, 1), "positive size or -1"),
])
def test_mesh_that_does_not_fit_is_refused_with_shapes_that_do(shape, message):
  with pytest.raises(partitioning.MeshConfigError, match=message) as error:
    partitioning.resolve_mesh_shape(mesh_config(*shape), 8)
  assert "data=2 x fsdp=2 x tensor=2" in str(error.value) or "-1" in str(error.value)


def test_unknown_mesh_axis_is_refused():
  config = mesh_config()
  config.pipeline = 2
  with pytest.raises(partitioning.MeshConfigError, match="unknown keys \\['pipeline'\\]"):
    partitioning.resolve_mesh_shape(config, 8)


def test_make_mesh_uses_auto_axes_over_every_device():
  mesh = partitioning.make_mesh(mesh_config(2, 2, 2))
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
  assert mesh.size == jax.device_count() == 8


def test_batch_not_divisible_by_data_parallel_size_is_refused_with_nearest_sizes():
  mesh = partitioning.make_mesh(mesh_config(2, 2, 2))
  partitioning.check_batch_size(8, mesh)
  with pytest.raises(partitioning.MeshConfigError, match="batch_size=6 must be a multiple of 4.*4 or 8"):
    partitioning.check_batch_size(6, mesh)
  with pytest.raises(partitioning.MeshConfigError, match="multiple of 8 .*grad_accum_steps = 2"):
    partitioning.check_batch_size(12, mesh, grad_accum_steps=2)
  with pytest.raises(partitioning.MeshConfigError, match="multiple of 12 .*3 processes"):
    partitioning.check_batch_size(8, mesh, process_count=3)


def test_rules_resolve_params_and_activations_by_their_own_names():
  rules = lambda names, rules=partitioning.LOGICAL_AXIS_RULES: partitioning.logical_to_mesh_spec(names, rules=rules)
  assert rules(("vocab", "embed")) == P("tensor", "fsdp")
  assert rules(("layers", "embed", "heads", "kv")) == P(None, "fsdp", "tensor", None)
  assert rules(("layers", "mlp", "embed")) == P(None, "tensor", "fsdp")
  # Activations: the batch over (data, fsdp), the width whole, by their own rules in any order.
  assert rules(("activation_batch", "activation_length", "activation_embed")) == P(("data", "fsdp"), None, None)
  assert rules(("activation_batch", "activation_length", "activation_vocab")) == P(("data", "fsdp"), None, "tensor")
  reversed_rules = tuple(reversed(partitioning.LOGICAL_AXIS_RULES))
  for names in (("activation_batch", "activation_length", "activation_embed"), ("vocab", "embed"),
                ("layers", "embed", "heads", "kv")):
    assert rules(names, rules=reversed_rules) == rules(names), names
  assert rules(None) == P()


def test_dimension_the_mesh_does_not_divide_is_replicated():
  mesh = partitioning.make_mesh(mesh_config(1, 4, 2))
  assert partitioning.logical_to_mesh_spec(("conv_in", "embed"), (3, 6), mesh, rules=partitioning.LOGICAL_AXIS_RULES) == P(None, None)
  assert partitioning.logical_to_mesh_spec(("vocab", "embed"), (384, 6), mesh, rules=partitioning.LOGICAL_AXIS_RULES) == P("tensor", None)


def test_every_model_axis_name_has_a_rule():
  from gato_jax.model import LOGICAL_AXIS_NAMES  # pylint: disable=g-import-not-at-top
  assert set(LOGICAL_AXIS_NAMES) <= {name for name, _ in partitioning.LOGICAL_AXIS_RULES}


def test_gato_param_and_optimizer_shardings_follow_the_rules():
  config = support.get_config()
  layout = VocabLayout.from_config(config.vocab)
  model_fn = loop.default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  mesh = partitioning.make_mesh(mesh_config(2, 2, 2))
  from gato_jax.training import optimizer  # pylint: disable=g-import-not-at-top
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  abstract = state_lib.abstract_train_state(model_fn, tx, mesh, model_def, rules=partitioning.LOGICAL_AXIS_RULES)  # nothing allocated
  flat_axes = dict(jax.tree_util.tree_flatten_with_path(
      model_def.param_axes, is_leaf=lambda x: x is None or isinstance(x, tuple))[0])
  flat_params = dict(jax.tree_util.tree_flatten_with_path(abstract.params)[0])
  assert flat_params.keys() == flat_axes.keys()
  for path, x in flat_params.items():
    assert x.sharding.spec == partitioning.logical_to_mesh_spec(flat_axes[path], x.shape, mesh,
                                                             rules=partitioning.LOGICAL_AXIS_RULES), path
  specs = {jax.tree_util.keystr(p): x.sharding.spec for p, x in flat_params.items()}
  assert specs["['embedding']['token_table']['embedding']"] == P("tensor", "fsdp"), specs
  assert sum(any(a is not None for a in spec) for spec in specs.values()) >= 5
  # Adam's moments are sharded exactly like their params; counters are replicated.
  mu = abstract.opt_state[1][0].mu
  assert jax.tree.map(lambda x: x.sharding, mu) == jax.tree.map(lambda x: x.sharding, abstract.params)
  assert abstract.step.sharding.spec == P() and abstract.rng.sharding.spec == P()


def test_global_batch_splits_rows_over_data_and_fsdp():
  mesh = partitioning.make_mesh(mesh_config(2, 2, 2))
  local = {"tokens": np.arange(8 * 3, dtype=np.int32).reshape(8, 3), "task_index": np.arange(8, dtype=np.int32)}
  batch = partitioning.global_batch(local, mesh, 8)
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
  assert batch["task_index"].sharding.spec == P(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), local["tokens"])
  shard_rows = {s.data.shape[0] for s in batch["tokens"].addressable_shards}
  assert shard_rows == {2}


def test_initialize_distributed_validates_its_flags():
  with pytest.raises(ValueError, match="go together"):
    partitioning.initialize_distributed("127.0.0.1:1234", None, 0)
  with pytest.raises(ValueError, match="must be in \\[0, 2\\)"):
    partitioning.initialize_distributed("127.0.0.1:1234", 2, 2)
  # One process and no cluster: nothing to join.
  assert partitioning.initialize_distributed("127.0.0.1:1234", 1, 0) is False
  assert partitioning.initialize_distributed() is False
