"""TPU targets for ahead-of-time compilation: topology names, compile-only devices and each chip's specs.

A topology is named as JAX and MaxText name it, `<generation>:<chips per axis>`: `v5e:16x16` (a v5e-256
slice), `v4:2x2x1` (v4-8), `v5p:4x4x4` (v5p-128), `v6e:2x2`. `compile_only_devices` asks libtpu for the
devices of that topology (times `num_slices` over DCN) without any TPU attached: `jit(...).lower(...)
.compile()` on a mesh of them runs the real TPU compiler on this machine (needs the `tpu` extra).

Chip specs are Google's published per-chip figures (Cloud TPU system-architecture pages for v4, v5e,
v5p and v6e, read 2026-12): peak dense bf16 FLOP/s, HBM capacity and bandwidth, and the interchip
interconnect (ICI) bandwidth per chip. They feed the roofline estimates of bench/fit_table.py and
nothing that trains.
"""

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  generation: str  # v4 | v5e | v5p | v6e
  hbm_bytes: int  # HBM capacity per chip
  peak_bf16_flops: float  # dense bf16 FLOP/s per chip
  hbm_bytes_per_s: float  # HBM bandwidth per chip
  ici_bytes_per_s: float  # interchip interconnect bandwidth per chip (all links, one direction summed)
  dims: int  # 2 (v5e, v6e: 2-D torus) or 3 (v4, v5p)
  megacore: bool  # two TensorCores shown as one JAX device per chip (v4, v5p)
  dcn_bytes_per_s_per_chip: float = 100e9 / 8 / 4  # data-centre network: ~100 Gbit/s per 4-chip host


# Published per-chip figures (see the module docstring). ICI: v4 2,400 Gbps; v5e 1,600 Gbps;
# v5p 4,800 Gbps; v6e 3,584 Gbps.
CHIPS = {
    "v4": ChipSpec("v4", 32 * GIB, 275e12, 1228e9, 2400e9 / 8, 3, True),
    "v5e": ChipSpec("v5e", 16 * GIB, 197e12, 819e9, 1600e9 / 8, 2, False),
    "v5p": ChipSpec("v5p", 95 * GIB, 459e12, 2765e9, 4800e9 / 8, 3, True),
    "v6e": ChipSpec("v6e", 32 * GIB, 918e12, 1640e9, 3584e9 / 8, 2, False),
}
# libtpu's generation names where they differ from the ones people say.
_LIBTPU_NAMES = {"v5e": "v5e", "v5p": "v5p", "v4": "v4", "v6e": "v6e"}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v5": "v5p"}


class TopologyError(ValueError):
  """A topology name, slice count or libtpu install that cannot give compile-only devices."""


@dataclasses.dataclass(frozen=True)
class Target:
  """One compile target: a topology of one generation, possibly several slices over DCN."""
  name: str  # canonical "<generation>:<shape>", e.g. "v5e:16x16"
  chip: ChipSpec
  shape: tuple[int, ...]
  num_slices: int = 1

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def label(self) -> str:
    return self.name if self.num_slices == 1 else f"{self.num_slices}x {self.name}"


def parse(topology: str, num_slices: int = 1) -> Target:
  """`v5e:16x16` -> Target; one line naming what was expected otherwise."""
  known = ", ".join(sorted(CHIPS))
  match = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+){1,2})", str(topology).strip().lower())
  if not match:
    raise TopologyError(f"--topology={topology!r}: expected <generation>:<chips per axis>, e.g. v5e:16x16, "
                        f"v4:2x2x1, v5p:4x4x4 (generations: {known})")
  generation = _ALIASES.get(match[1], match[1])
  if generation not in CHIPS:
    raise TopologyError(f"--topology={topology!r}: unknown TPU generation {match[1]!r}; known: {known}")
  chip = CHIPS[generation]
  shape = tuple(int(s) for s in match[2].split("x"))
  if len(shape) != chip.dims or any(s <= 0 for s in shape):
    example = "2x2" if chip.dims == 2 else "2x2x1"
    raise TopologyError(f"--topology={topology!r}: a {generation} topology has {chip.dims} positive axes, "
                        f"e.g. {generation}:{example}")
  if int(num_slices) < 1:
    raise TopologyError(f"--num_slices={num_slices}: must be at least 1")
  return Target(f"{generation}:{'x'.join(map(str, shape))}", chip, shape, int(num_slices))


@contextlib.contextmanager
def _quiet_native_stderr():
  """libtpu prints metadata-server warnings straight to file descriptor 2 while it builds a topology on
  a machine that is not a TPU VM; they say nothing about the compile, so they go to a scratch file."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as scratch:
    os.dup2(scratch.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def libtpu_available() -> bool:
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import  # TPU hosts only
  except ImportError:
    return False
  return True


def compile_only_devices(target: Target) -> list:
  """The JAX devices of `target` for compilation only (no TPU needed, libtpu needed)."""
  if not libtpu_available():
    raise TopologyError("compiling for a TPU topology needs libtpu: pip install -e '.[tpu]' (the "
                        "jax[tpu] of the pinned jax release)")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server to ask: this is not a TPU VM
  # Compiling never opens a TPU, so libtpu's one-process lock would only stop two checks (two pytest
  # workers, a check beside a run on a TPU VM) from compiling side by side.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top  # after libtpu's env vars above
  kwargs = {"num_slices": target.num_slices} if target.num_slices > 1 else {}
  if target.chip.megacore:
    kwargs["chip_config_name"] = "megacore"
  try:
    with _quiet_native_stderr():
      topo = topologies.get_topology_desc(topology_name=f"{_LIBTPU_NAMES[target.chip.generation]}:"
                                          f"{'x'.join(map(str, target.shape))}", platform="tpu", **kwargs)
  except Exception as e:  # pylint: disable=broad-except  # libtpu's own InvalidArgument text
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TopologyError(f"--topology={target.label}: libtpu cannot lay out this topology ({first})") from e
  devices = list(topo.devices)
  if len(devices) != target.chips:
    raise TopologyError(f"--topology={target.label}: libtpu gave {len(devices)} devices for {target.chips} "
                        "chips (expected one device per chip)")
  return devices
