"""Multi-slice meshes (ICI within a slice, DCN across) and logical-axis rules set from the config."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments import gato_79m
from gato_jax import partitioning
from gato_jax.model import logical as lg
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import loop, state as state_lib


class FakeDevice:
  """What mesh_utils reads of a device: id, slice_index, process_index, platform, device_kind."""

  def __init__(self, i, slice_index, per_process=4):
    self.id, self.slice_index, self.process_index = i, slice_index, i // per_process
    self.platform, self.device_kind = "cpu", "fake"

  def __repr__(self):
    return f"FakeDevice({self.id}, slice={self.slice_index})"


def fake_slices(num_slices, per_slice, shuffle=True):
  devices = [FakeDevice(i, i // per_slice) for i in range(num_slices * per_slice)]
  if shuffle:  # the runtime lists devices in no promised order: slices must be found by slice_index
    devices = [devices[i] for i in np.random.default_rng(0).permutation(len(devices))]
  return devices


@pytest.mark.parametrize("dcn_axis, shape, ici, dcn", [
    ("data", (4, 4, 2), (2, 4, 2), (2, 1, 1)),
    ("fsdp", (1, 16, 2), (1, 8, 2), (1, 2, 1)),
])
def test_dcn_axis_spans_the_slices_and_every_slice_is_one_block(dcn_axis, shape, ici, dcn):
  assert partitioning.hybrid_shapes(shape, 2, dcn_axis) == (ici, dcn)
  grid = partitioning.hybrid_device_array(ici, dcn, fake_slices(2, 16))
  assert grid.shape == shape
  axis = partitioning.MESH_AXES.index(dcn_axis)
  for s in range(2):
    block = np.take(grid, range(s * ici[axis], (s + 1) * ici[axis]), axis=axis)
    assert {d.slice_index for d in block.flat} == {s}, (dcn_axis, s)
  # tensor (the innermost, chattiest axis) never leaves a slice
  assert all(len({d.slice_index for d in row}) == 1 for row in grid.reshape(-1, shape[-1]))


def test_hybrid_shapes_refuse_what_cannot_span_slices():
  with pytest.raises(partitioning.MeshConfigError, match="config.mesh.data=3 must be a multiple of "
                     "config.mesh.num_slices=2"):
    partitioning.hybrid_shapes((3, 2, 1), 2, "data")
  with pytest.raises(partitioning.MeshConfigError, match="dcn_axis='tensor'"):
    partitioning.hybrid_shapes((1, 2, 4), 2, "tensor")


def test_make_mesh_with_slices_on_cpu_devices_cuts_them_in_device_order():
  config = ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2, "num_slices": 2, "dcn_axis": "data"})
  devices = jax.devices()[:8]
  mesh = partitioning.make_mesh(config, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert {d.id for d in mesh.devices[0].flat} == {d.id for d in devices[:4]}
  assert {d.id for d in mesh.devices[1].flat} == {d.id for d in devices[4:]}


def test_rules_from_config_extend_and_replace_the_default_table():
  extra = (("activation_length", "tensor"),)
  config = ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2, "extra_rules": extra})
  mesh = partitioning.make_mesh(config, jax.devices()[:8])
  rules = partitioning.rules_from_config(config)
  assert rules[:1] == extra and rules[1:] == partitioning.LOGICAL_AXIS_RULES
  assert partitioning.logical_to_mesh_spec(lg.ACTIVATION, mesh=mesh, rules=rules) == P(("data", "fsdp"), "tensor", None)
  # A config without rules: the default table.
  rules = partitioning.rules_from_config(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))
  assert partitioning.logical_to_mesh_spec(lg.ACTIVATION, mesh=mesh, rules=rules) == P(("data", "fsdp"), None, None)
  # The rules travel beside the mesh: a sharding helper given none refuses instead of guessing.
  with pytest.raises(TypeError, match="rules"):
    partitioning.logical_to_mesh_spec(lg.ACTIVATION, mesh=mesh)
  replaced = partitioning.rules_from_config({"rules": [["activation_batch", "data"], ["embed", ["fsdp", "tensor"]]]})
  assert replaced == (("activation_batch", "data"), ("embed", ("fsdp", "tensor")))


@pytest.mark.parametrize("rule", [("embed",), ("embed", "pipeline"), (3, "fsdp"), ("embed", ["fsdp", 2])])
def test_malformed_rule_is_one_clear_line(rule):
  with pytest.raises(partitioning.MeshConfigError, match=r"config.mesh.extra_rules: rule .* must be \(logical "
                     r"name, None \| mesh axis \| tuple of mesh axes\)"):
    partitioning.rules_from_config({"extra_rules": [rule]})


def test_gato_79m_shards_abstractly_under_an_overridden_rule_set():
  """2-D weight sharding from the config alone: embed over fsdp x tensor (heads / vocab then whole)."""
  config = gato_79m.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  config.mesh.extra_rules = (("embed", ("fsdp", "tensor")), ("activation_length", "tensor"))
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  mesh = partitioning.make_mesh(config.mesh, jax.devices()[:8])
  shardings = partitioning.tree_shardings(model_def.abstract_params, model_def.param_axes, mesh,
                                          rules=partitioning.rules_from_config(config.mesh))
  specs = {jax.tree_util.keystr(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
  assert specs["['embedding']['token_table']['embedding']"] == P(None, ("fsdp", "tensor"))
  query = next(spec for path, spec in specs.items() if "query" in path)
  assert query == P(None, ("fsdp", "tensor"), None, None)
  default = partitioning.tree_shardings(model_def.abstract_params, model_def.param_axes,
                                        partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8]),
                                        rules=partitioning.LOGICAL_AXIS_RULES)
  default_specs = {jax.tree_util.keystr(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(default)[0]}
  assert default_specs["['embedding']['token_table']['embedding']"] == P("tensor", "fsdp")
  # Every parameter's sharded dimensions divide: 79M fits this rule set without a replication fallback.
  for path, x in jax.tree_util.tree_flatten_with_path(model_def.abstract_params)[0]:
    spec = specs[jax.tree_util.keystr(path)]
    for size, axes in zip(x.shape, spec):
      split = 1 if axes is None else np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)])
      assert size % split == 0, (path, x.shape, spec)
