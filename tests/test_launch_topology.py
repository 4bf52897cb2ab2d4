"""The TPU slice table every launcher reads: chips, hosts, topology and the names gcloud and GKE use."""

import pytest

from launch import topology


@pytest.mark.parametrize("name, gcloud, chips, hosts, per_host, topo, gke", [
    ("v4-8", "v4-8", 4, 1, 4, "2x2x1", "tpu-v4-podslice"),
    ("v4-16", "v4-16", 8, 2, 4, "2x2x2", "tpu-v4-podslice"),
    ("v4-32", "v4-32", 16, 4, 4, "2x2x4", "tpu-v4-podslice"),
    ("v5p-128", "v5p-128", 64, 16, 4, "4x4x4", "tpu-v5p-slice"),
    ("v5e-256", "v5litepod-256", 256, 64, 4, "16x16", "tpu-v5-lite-podslice"),
    ("v5litepod-8", "v5litepod-8", 8, 1, 8, "2x4", "tpu-v5-lite-podslice"),
    ("V6E-16", "v6e-16", 16, 4, 4, "4x4", "tpu-v6e-slice"),
    ("v3-512", "v3-512", 256, 64, 4, "16x16", None),  # the paper's 16x16 TPU v3: 512 JAX devices
])
def test_known_slices(name, gcloud, chips, hosts, per_host, topo, gke):
  tpu = topology.parse(name)
  assert (tpu.accelerator_type, tpu.chips, tpu.hosts, tpu.chips_per_host, tpu.topology,
          tpu.gke_accelerator) == (gcloud, chips, hosts, per_host, topo, gke)
  assert tpu.hosts * tpu.chips_per_host == tpu.chips
  # Megacore chips are one JAX device; v2 / v3 show both TensorCores.
  assert tpu.devices == chips * (2 if name.startswith(("v2", "v3")) else 1)


@pytest.mark.parametrize("name, message", [
    ("v4-33", "must be even"),
    ("v4-48", "no v4 slice of size 48"),
    ("v9-8", "unknown TPU generation 'v9'"),
    ("tpu", "not of the form"),
])
def test_bad_accelerator_types_name_the_problem(name, message):
  with pytest.raises(ValueError, match=message):
    topology.parse(name)


def test_shell_output_is_what_tpu_vm_sh_evaluates(capsys):
  assert topology.main(["--shell", "v5e-256"]) == 0
  values = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
  assert values["TPU_ACCELERATOR_TYPE"] == "v5litepod-256"
  assert values["TPU_HOSTS"] == "64"
  assert values["TPU_RUNTIME_VERSION"] == "v2-alpha-tpuv5-lite"
  assert topology.main(["v7-8"]) == 2
