"""The compile-only check's parts that need no TPU compiler: topology names and the HLO reader."""

import pytest

from gato_jax.aot import hlo, topology

# A trimmed optimized HLO module as XLA:TPU prints it: a layer loop of 4 trips whose body all-gathers
# a layer's weights (one channel: start in the body), a table gather started before the loop with a
# continuation inside it (same channel: runs once), TPU's reduce-scatter fusion, and a plain all-reduce.
HLO = """HloModule jit_train_step, entry_computation_layout={()->()}

%cond (p: (s32[], bf16[8])) -> pred[] {
  %p = (s32[]{:T(128)}, bf16[8]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  %constant.9 = s32[]{:T(128)} constant(4), metadata={op_name="jit(train_step)/while/cond"}
  ROOT %lt = pred[]{:T(512)} compare(%i, %constant.9), direction=LT
}

%async_collective_fusion.1 (param_0: bf16[64,16]) -> bf16[64,64] {
  %param_0 = bf16[64,16]{1,0} parameter(0)
  ROOT %all-gather.7 = bf16[64,64]{1,0:T(8,128)} all-gather(%param_0), channel_id=140, replica_groups=mesh['axis_0'=1,'axis_1'=4] {'axis_1'}, dimensions={1}
}

%async_collective_fusion.2 (param_0: bf16[64,16]) -> bf16[64,64] {
  %param_0 = bf16[64,16]{1,0} parameter(0)
  ROOT %all-gather.8 = bf16[64,64]{1,0:T(8,128)} all-gather(%param_0), channel_id=140, replica_groups=mesh['axis_0'=1,'axis_1'=4] {'axis_1'}, dimensions={1}
}

%body (p: (s32[], bf16[8])) -> (s32[], bf16[8]) {
  %p = (s32[]{:T(128)}, bf16[8]) parameter(0)
  %all-gather.3 = bf16[1,32,32]{2,1,0} all-gather(%x), channel_id=262, replica_groups=[2,4]<=[8], dimensions={1}, metadata={op_name="jit(train_step)/while/body/dot_general"}
  %fusion.2 = bf16[64,64]{1,0} fusion(%y), kind=kCustom, calls=%async_collective_fusion.2
  %permute = f32[16,16]{1,0} collective-permute(%z), channel_id=300, source_target_pairs={{0,1},{1,0}}
  ROOT %t = (s32[]{:T(128)}, bf16[8]) tuple(%i, %w)
}

%all-reduce-scatter (input: f32[64,64]) -> f32[64,16] {
  %input = f32[64,64]{0,1:T(8,128)} parameter(0)
  %all-reduce.110 = f32[64,64]{0,1:T(8,128)} all-reduce(%input), channel_id=192, replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  ROOT %dynamic-slice.300 = f32[64,16]{0,1} dynamic-slice(%all-reduce.110, %c, %d), dynamic_slice_sizes={64,16}
}

ENTRY %main (a: bf16[64,16]) -> f32[] {
  %a = bf16[64,16]{1,0} parameter(0)
  %fusion.1 = bf16[64,64]{1,0} fusion(%a), kind=kCustom, calls=%async_collective_fusion.1
  %while.1 = (s32[]{:T(128)}, bf16[8]) while(%init), condition=%cond, body=%body
  %fusion.7 = f32[64,16]{0,1} fusion(%g), kind=kCustom, calls=%all-reduce-scatter
  ROOT %all-reduce.1 = f32[]{:T(128)} all-reduce(%l), channel_id=41, replica_groups={}, to_apply=%add
}
"""


def test_collectives_counted_per_loop_trip_and_channel():
  by_kind = {}
  for c in hlo.collectives(HLO, num_devices=8):
    by_kind.setdefault(c.kind, []).append(c)
  gathers = sorted((c.bytes, c.count, c.group_size) for c in by_kind["all-gather"])
  # The layer gather runs once per trip; the table gather's loop continuation does not multiply it.
  assert gathers == [(2 * 32 * 32, 4, 4), (2 * 64 * 64, 1, 4)]
  (scatter,) = by_kind["reduce-scatter"]
  assert (scatter.bytes, scatter.group_size, scatter.count) == (4 * 64 * 16, 4, 1)
  assert scatter.wire_bytes == pytest.approx(4 * 64 * 64 * 3 / 4)
  (permute,) = by_kind["collective-permute"]
  assert (permute.count, permute.group_size) == (4, 2)
  (reduce,) = by_kind["all-reduce"]
  assert (reduce.bytes, reduce.group_size) == (4, 8)
  summary = hlo.summarize(hlo.collectives(HLO, num_devices=8))
  assert summary["all-gather"]["executions"] == 5
  assert summary["all-gather"]["bytes"] == 4 * 2 * 32 * 32 + 2 * 64 * 64


def test_largest_buffers_skip_fusion_internals():
  sizes = hlo.largest_buffers(HLO, k=10)
  names = [op for _, _, op in sizes]
  assert "jit(train_step)/while/body/dot_general" in names  # a loop body's result
  assert all("dynamic-slice" not in op for op in names)  # inside a fusion: never in memory


@pytest.mark.parametrize("text,expected", [
    ("f32[2,3]{1,0}", 24), ("(bf16[4], s32[])", 12), ("pred[8]", 8), ("f8e4m3fn[16]", 16)])
def test_array_bytes(text, expected):
  assert hlo.array_bytes(text) == expected


@pytest.mark.parametrize("name,slices,chips,canonical", [
    ("v5e:16x16", 1, 256, "v5e:16x16"), ("v5litepod:2x2", 1, 4, "v5e:2x2"), ("v4:2x2x1", 1, 4, "v4:2x2x1"),
    ("v5p:4x4x4", 2, 128, "v5p:4x4x4")])
def test_topology_names(name, slices, chips, canonical):
  target = topology.parse(name, slices)
  assert (target.chips, target.name) == (chips, canonical)


@pytest.mark.parametrize("name,slices,fragment", [
    ("v5e-256", 1, "expected <generation>:<chips per axis>"), ("v9:2x2", 1, "unknown TPU generation 'v9'"),
    ("v4:2x2", 1, "a v4 topology has 3 positive axes"), ("v5e:2x2", 0, "--num_slices=0")])
def test_bad_topology_is_one_line(name, slices, fragment):
  with pytest.raises(topology.TopologyError) as info:
    topology.parse(name, slices)
  assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_libtpu_is_one_line(monkeypatch):
  monkeypatch.setattr(topology, "libtpu_available", lambda: False)
  with pytest.raises(topology.TopologyError, match=r"needs libtpu: pip install -e '\.\[tpu\]'"):
    topology.compile_only_devices(topology.parse("v5e:2x2"))
