"""The real TPU compiler on this machine (libtpu, no TPU): programs, kernels and sharding of a small
topology, and gato-train --compile_only's exits."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("libtpu", reason="the TPU compiler comes with the `tpu` extra (make install has it)")

from experiments import tiny_demo  # pylint: disable=g-import-not-at-top
from gato_jax import partitioning
from gato_jax.aot import check, hlo, topology
from gato_jax.model import attention
from gato_jax.training import program as program_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = 4


def _config(fsdp=4, tensor=2):
  config = tiny_demo.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, fsdp, tensor
  config.model.num_layers, config.model.scan_layers = LAYERS, True
  config.model.max_image_tokens = -1  # the patch encoder compiled too
  return config


@pytest.fixture(scope="module")
def target():
  return topology.parse("v5e:2x4")


@pytest.fixture(scope="module")
def devices(target):
  return topology.compile_only_devices(target)


def test_every_program_compiles_and_fits(target, devices):
  fit = check.compile_for(_config(), target, config_name="tiny", devices=devices)
  assert fit.fits and set(fit.programs) == set(check.PROGRAMS)
  assert fit.attention_impl == "pallas_tpu"  # "auto" on TPU at L = 256
  for report in fit.programs.values():
    assert 0 < report.peak_bytes < fit.hbm_bytes
    assert report.argument_bytes > 0 and report.collectives
  train = fit.programs["train_step"]
  assert train.alias_bytes > 0.9 * train.output_bytes  # the donated state is updated in place
  json.dumps(fit.to_json())  # the report is plain JSON


def test_fsdp_and_tensor_collectives_where_the_rules_put_them(devices):
  """FSDP x tensor (4 x 2): each scanned layer's weights gathered over fsdp inside the layer loop, never
  the whole stack at once; gradients leave as reduce-scatters (or the ring of permutes XLA fuses with
  the weight-gradient matmul), never a full all-reduce of a sharded weight; the tensor axis has its own."""
  config = _config()
  mesh = partitioning.make_mesh(config.mesh, devices)
  program = program_lib.build(config, mesh)
  text = program_lib.lower_train_step(program.train_step, program.abstract_state, mesh, config).compile().as_text()
  ops = hlo.collectives(text, mesh.size)
  e, m = config.model.embed_dim, config.model.mlp_dim
  layer_kernel = 4 * e * m // 2  # one layer's GEGLU branch kernel (f32), tensor-split: what fsdp gathers
  per_layer = [c for c in ops if c.kind == "all-gather" and c.count % LAYERS == 0 and c.group_size == 4]
  assert per_layer, "no all-gather runs once per layer over the fsdp axis"
  assert max(c.bytes for c in per_layer) <= layer_kernel
  # The whole stack of a big layer parameter (every layer at once), unsplit or as its tensor shard.
  # XLA may hoist the gather of a small stack out of the layer loop when it is cheap (it does so for the
  # attention output kernel here: 64 KiB); the MLP and the fused-size kernels must stay per layer.
  layer_params = [x for x in jax.tree.leaves(program.abstract_state.params) if x.ndim > 1 and x.shape[0] == LAYERS]
  biggest = max(x.size for x in layer_params)
  big = [x for x in layer_params if x.size * 2 > biggest]

  def tensor_shard(x):  # the shape a parameter has once split over the tensor axis only
    spec = tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))
    return tuple(d // 2 if "tensor" in jax.tree.leaves(a) else d for d, a in zip(x.shape, spec))
  stacked = {tuple(x.shape) for x in big} | {tensor_shard(x) for x in big}
  whole = [c for c in ops if c.kind == "all-gather" and c.shape in stacked]
  assert not whole, f"whole stacked parameters gathered: {whole}"
  reductions = [c for c in ops if c.kind in ("reduce-scatter", "collective-permute")]
  assert reductions, "gradients never reduce-scattered"
  # The big layer weights' gradients are never all-reduced at their full shape over the batch axes
  # (groups of 4 or all 8). Small ones, vectors and the lookup tables' scatter-added gradients may be:
  # XLA's choice by size (here the 16 KiB attention output kernel; docs/DECISIONS.md).
  sharded = {tensor_shard(x)[1:] for x in big if "fsdp" in jax.tree.leaves(tuple(x.sharding.spec))}
  whole_grads = [c for c in ops if c.kind == "all-reduce" and c.group_size > 2 and set(c.shapes) & sharded]
  assert sharded and not whole_grads, f"an fsdp-sharded gradient is all-reduced whole: {whole_grads}"
  # Megatron-style tensor parallelism: the row-parallel matmuls' activations are summed over tensor.
  assert any(c.kind == "all-reduce" and c.group_size == 2 and c.shape[-1] == e for c in ops), \
      "no activation all-reduce over the tensor axis (size 2)"


@pytest.mark.parametrize("impl", ["pallas_tpu", "flash_tpu"])
def test_pallas_kernels_lower_through_mosaic(devices, impl):
  """The splash and flash kernels, forward and backward, compiled by Mosaic for a TPU (interpret mode
  on CPU checks their numbers; this checks they lower for the real chip)."""
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 1, "tensor": 2}, devices[:4])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(partitioning.BATCH_AXES, None, "tensor"))
  q = jax.ShapeDtypeStruct((4, 512, 4, 128), jnp.bfloat16, sharding=sharding)

  def loss(q, k, v):
    return attention.causal_attention(q, k, v, impl).astype(jnp.float32).sum()

  with partitioning.axis_rules(mesh, partitioning.LOGICAL_AXIS_RULES):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile()
  assert "tpu_custom_call" in compiled.as_text()


def _compile_only(*args, workdir=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "gato_jax.train", "--config", os.path.join(REPO, "experiments/tiny_demo.py"),
             "--compile_only", *args] + (["--workdir", workdir] if workdir else [])
  return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


@pytest.mark.parametrize("args,fragment", [
    (["--topology=v5e:3x3"], "libtpu cannot lay out this topology"),
    (["--topology=v5e-4"], "expected <generation>:<chips per axis>"),
    (["--topology=v5e:2x2"], "--topology=v5e:2x2 (4 chips): config.mesh data=2 x fsdp=2 x tensor=2 needs 8"),
    (["--topology=v5e:2x2", "--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=1",
      "--config.batch_size=6"], "config.batch_size=6 must be a multiple of 4"),
    (["--topology=v5e:2x2", "--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=1",
      "--config.batch_size=16384"], "train_step does not fit on v5e:2x2: it needs"),
])
def test_compile_only_refuses_in_one_line_and_writes_nothing(tmp_path, args, fragment):
  workdir = str(tmp_path / "run")
  result = _compile_only(*args, workdir=workdir)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("gato-train: ") and fragment in last, last
  assert "Traceback" not in result.stderr
  assert not os.path.exists(workdir)


def _fake_cloud_tools(tmp_path):
  """gcloud and kubectl stand-ins on PATH that record every call: the pod is never to be reached."""
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
  bin_dir.mkdir()
  for tool in ("gcloud", "kubectl"):
    (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\n")
    (bin_dir / tool).chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable)
  return env, calls


TOO_BIG = ["--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=1", "--config.batch_size=16384"]


def test_tpu_vm_launcher_stops_before_the_pod_when_it_would_not_fit(tmp_path):
  env, calls = _fake_cloud_tools(tmp_path)
  result = subprocess.run(
      ["bash", "launch/tpu_vm.sh", "up", "--name=gato-tiny", "--zone=z", "--project=p",
       "--accelerator=v5litepod-4", "--experiment=tiny_demo", "--bucket=gs://b/runs", "--", *TOO_BIG],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "train_step does not fit on v5e:2x2" in result.stderr
  assert "nothing was launched" in result.stderr.strip().splitlines()[-1]
  assert not calls.exists(), calls.read_text()  # no gcloud call: no slice created, nothing copied


def test_gke_launcher_stops_before_kubectl_when_it_would_not_fit(tmp_path):
  env, calls = _fake_cloud_tools(tmp_path)
  result = subprocess.run(
      [sys.executable, "-m", "launch.gke.jobset", "--accelerator=v5e-4", "--image=img", "--experiment=tiny_demo",
       "--bucket=gs://b/runs", "--", *TOO_BIG], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "train_step does not fit on v5e:2x2" in result.stderr
  assert not calls.exists(), calls.read_text()
