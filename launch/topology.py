"""TPU slice shapes: what an accelerator type such as v4-32 means in chips, hosts, topology and names.

One table for every launcher (tpu_vm.sh reads it through `python -m launch.topology --shell TYPE`, the
GKE renderer imports it). v2, v3, v4 and v5p type names count TensorCores (two per chip); v5e and v6e
names count chips. Multi-host slices have 4 chips per host; a single host may hold up to 8.
"""

import argparse
import dataclasses
import re
import shlex
import sys

# chips -> physical topology, as Cloud TPU and GKE name it.
_TOPOLOGY_2D_V2_V3 = {4: "2x2", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16",
                      512: "16x32", 1024: "32x32"}
_TOPOLOGY_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
                256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_TOPOLOGY_2D_LITE = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
                     256: "16x16"}


@dataclasses.dataclass(frozen=True)
class _Generation:
  gcloud_prefix: str  # how gcloud spells the type: "<prefix>-<number>"
  cores_per_chip: int  # 2 where the type's number counts TensorCores, 1 where it counts chips
  topologies: dict[int, str]
  hbm_gib_per_chip: int
  runtime_version: str  # a TPU VM software version for `gcloud compute tpus tpu-vm create --version`
  gke_accelerator: str | None  # the cloud.google.com/gke-tpu-accelerator node label; None: not on GKE
  max_single_host_chips: int = 4  # slices up to this size are one host; bigger ones have 4 per host
  devices_per_chip: int = 1  # JAX devices: v2 / v3 show each TensorCore, megacore chips show one


_GENERATIONS = {
    "v2": _Generation("v2", 2, _TOPOLOGY_2D_V2_V3, 16, "tpu-ubuntu2204-base", None, devices_per_chip=2),
    "v3": _Generation("v3", 2, _TOPOLOGY_2D_V2_V3, 32, "tpu-ubuntu2204-base", None, devices_per_chip=2),
    "v4": _Generation("v4", 2, _TOPOLOGY_3D, 32, "tpu-ubuntu2204-base", "tpu-v4-podslice"),
    "v5p": _Generation("v5p", 2, _TOPOLOGY_3D, 95, "v2-alpha-tpuv5", "tpu-v5p-slice"),
    "v5e": _Generation("v5litepod", 1, _TOPOLOGY_2D_LITE, 16, "v2-alpha-tpuv5-lite",
                       "tpu-v5-lite-podslice", max_single_host_chips=8),
    "v6e": _Generation("v6e", 1, _TOPOLOGY_2D_LITE, 32, "v2-alpha-tpuv6e", "tpu-v6e-slice",
                       max_single_host_chips=8),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """One TPU slice: its size, its shape and the names gcloud and GKE give it."""
  generation: str  # v2 | v3 | v4 | v5p | v5e | v6e
  accelerator_type: str  # gcloud's spelling, e.g. "v4-32", "v5litepod-256"
  chips: int
  topology: str  # e.g. "2x2x4"
  hbm_gib_per_chip: int
  runtime_version: str
  gke_accelerator: str | None
  chips_per_host: int
  devices: int  # what jax.device_count() reports across the slice: the mesh must multiply to this

  @property
  def hosts(self) -> int:
    """TPU VM workers: one gato-train process runs on each."""
    return self.chips // self.chips_per_host


def parse(accelerator_type: str) -> TpuSlice:
  """`v4-32`, `v5p-128`, `v5e-256` / `v5litepod-256`, `v6e-256` -> TpuSlice; a clear error otherwise."""
  match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type.strip().lower())
  known = ", ".join(sorted(_GENERATIONS))
  if not match:
    raise ValueError(f"accelerator type {accelerator_type!r} is not of the form <generation>-<size> "
                     f"(e.g. v4-32, v5p-128, v5e-256); generations: {known}")
  name, number = _ALIASES.get(match[1], match[1]), int(match[2])
  if name not in _GENERATIONS:
    raise ValueError(f"unknown TPU generation {match[1]!r} in {accelerator_type!r}; known: {known}")
  gen = _GENERATIONS[name]
  if number % gen.cores_per_chip:
    raise ValueError(f"{accelerator_type!r}: {name} sizes count TensorCores, {gen.cores_per_chip} per "
                     "chip, so the size must be even")
  chips = number // gen.cores_per_chip
  if chips not in gen.topologies:
    sizes = ", ".join(f"{name}-{c * gen.cores_per_chip}" for c in sorted(gen.topologies))
    raise ValueError(f"no {name} slice of size {number} ({accelerator_type!r}); sizes: {sizes}")
  return TpuSlice(
      generation=name, accelerator_type=f"{gen.gcloud_prefix}-{number}", chips=chips,
      topology=gen.topologies[chips], hbm_gib_per_chip=gen.hbm_gib_per_chip,
      runtime_version=gen.runtime_version, gke_accelerator=gen.gke_accelerator,
      chips_per_host=chips if chips <= gen.max_single_host_chips else 4,
      devices=chips * gen.devices_per_chip)


def shell_assignments(tpu: TpuSlice) -> str:
  """`TPU_CHIPS=16` ... lines for `eval` in a shell script."""
  values = {
      "TPU_GENERATION": tpu.generation,
      "TPU_ACCELERATOR_TYPE": tpu.accelerator_type,
      "TPU_CHIPS": tpu.chips,
      "TPU_HOSTS": tpu.hosts,
      "TPU_CHIPS_PER_HOST": tpu.chips_per_host,
      "TPU_DEVICES": tpu.devices,
      "TPU_TOPOLOGY": tpu.topology,
      "TPU_HBM_GIB_PER_CHIP": tpu.hbm_gib_per_chip,
      "TPU_RUNTIME_VERSION": tpu.runtime_version,
      "TPU_GKE_ACCELERATOR": tpu.gke_accelerator or "",
  }
  return "\n".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def describe(tpu: TpuSlice) -> str:
  hosts = f"{tpu.hosts} host" + ("s" if tpu.hosts > 1 else "")
  return (f"{tpu.accelerator_type}: {tpu.chips} chips ({tpu.topology}) = {tpu.devices} JAX devices, "
          f"{hosts} x {tpu.chips_per_host} chips, {tpu.hbm_gib_per_chip} GiB HBM per chip")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch.topology", description=__doc__.split("\n")[0])
  parser.add_argument("accelerator_type", help="e.g. v4-32, v5p-128, v5e-256")
  parser.add_argument("--shell", action="store_true", help="print NAME=value lines for eval")
  args = parser.parse_args(argv)
  try:
    tpu = parse(args.accelerator_type)
  except ValueError as e:
    print(f"launch.topology: {e}", file=sys.stderr)
    return 2
  print(shell_assignments(tpu) if args.shell else describe(tpu))
  return 0


if __name__ == "__main__":
  sys.exit(main())
