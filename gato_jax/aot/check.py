"""Will it fit? A config compiled for a TPU topology on this machine: memory per chip against HBM,
communication per step, and what to change when it does not fit (`gato-train --compile_only`)."""

import dataclasses
import math
import re

from absl import logging
import jax

from gato_jax import partitioning
from gato_jax.aot import programs, topology
from gato_jax.model import attention
from gato_jax.training import flops, program as program_lib

PROGRAMS = ("train_step", "act_step", "eval_forward")
GIB = 1 << 30
# XLA:TPU's two spellings of a program that does not fit in HBM.
_OOM = (re.compile(r"Used\s+([\d.]+)([KMGT]?)\s+of\s+([\d.]+)([KMGT]?)\s+hbm", re.IGNORECASE),
        re.compile(r"\(([\d.]+)([KMGT]?)\)\s+exceeds available HBM\s+\(([\d.]+)([KMGT]?)\)", re.IGNORECASE))
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class DoesNotFit(Exception):
  """A program needs more HBM per chip than the target has; the message says what to change."""

  def __init__(self, message: str, needed_bytes: int):
    super().__init__(message)
    self.needed_bytes = needed_bytes


@dataclasses.dataclass
class FitReport:
  config_name: str
  target: str
  chips: int
  hbm_bytes: int
  mesh: dict
  batch_size: int
  batch_per_chip: float
  sequence_length: int
  remat_policy: str
  attention_impl: str
  parameters: int
  model_flops_per_step: float  # flops.py's count for the global batch (fwd + bwd, no remat)
  programs: dict  # name -> programs.ProgramReport
  fits: bool = True
  problem: str = ""

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    for name, program in self.programs.items():
      out["programs"][name]["peak_bytes"] = program.peak_bytes
    return out


def target_config(config, target: topology.Target):
  """A copy of `config` for `target`: the slices over DCN, attention_impl="auto" resolved for TPU."""
  with config.unlocked():
    config = config.copy_and_resolve_references()
  if target.num_slices > 1:
    configured = int(config.mesh.get("num_slices", 1) or 1)
    if configured not in (1, target.num_slices):
      raise partitioning.MeshConfigError(f"--num_slices={target.num_slices} but config.mesh.num_slices="
                                         f"{configured}; give one of them")
    config.mesh.num_slices = target.num_slices
  if config.model.attention_impl == "auto":
    config.model.attention_impl = attention.auto_impl("tpu", config.data.sequence_length) or "xla"
  return config


def _process_count(devices) -> int:
  return len({d.process_index for d in devices})


def _oom_bytes(error: Exception) -> tuple[int, int] | None:
  match = next((m for m in (p.search(str(error)) for p in _OOM) if m), None)
  if not match:
    return None
  return (int(float(match[1]) * _UNITS[match[2].upper()]), int(float(match[3]) * _UNITS[match[4].upper()]))


def advice(config, mesh, target: topology.Target, needed: int) -> str:
  """What to change when `needed` bytes per chip exceed the chip's HBM."""
  tips = []
  per_chip = config.batch_size / mesh.size
  if config.model.remat_policy != "full":
    tips.append("--config.model.remat_policy=full (recompute each layer in the backward pass)")
  if per_chip > 1:
    smaller = max(1, int(per_chip * target.chip.hbm_bytes / needed))
    unit = partitioning.data_parallel_size(mesh)
    tips.append(f"a smaller batch per chip (~{smaller}: --config.batch_size={max(unit, smaller * mesh.size // unit * unit)}"
                f", or --config.optimizer.grad_accum_steps={math.ceil(per_chip / smaller)} to keep the batch)")
  if mesh.shape["data"] > 1:
    tips.append("shard the state: --config.mesh.data=1 --config.mesh.fsdp=-1")
  if mesh.shape["tensor"] == 1 and config.model.num_heads % 2 == 0:
    tips.append("tensor parallelism within a host: --config.mesh.tensor=2 or 4")
  return "; ".join(tips) or "a bigger slice"


def compile_for(config, target: topology.Target, *, config_name: str = "",
                which: tuple[str, ...] = PROGRAMS, devices=None) -> FitReport:
  """Compiles `which` programs of `config` for `target`; raises DoesNotFit (with advice) when one
  needs more than the chip's HBM, MeshConfigError / TopologyError on a bad mesh or topology."""
  config = target_config(config, target)
  devices = devices or topology.compile_only_devices(target)
  mesh = partitioning.make_mesh(config.mesh, devices)
  partitioning.check_batch_size(config.batch_size, mesh, config.optimizer.grad_accum_steps,
                                process_count=_process_count(devices))
  program = program_lib.build(config, mesh)
  params, _ = flops.param_counts(program.model_def)
  fit = FitReport(
      config_name=config_name, target=target.label, chips=target.chips, hbm_bytes=target.chip.hbm_bytes,
      mesh=dict(mesh.shape), batch_size=int(config.batch_size), batch_per_chip=config.batch_size / mesh.size,
      sequence_length=int(config.data.sequence_length), remat_policy=config.model.remat_policy,
      attention_impl=config.model.attention_impl, parameters=params,
      model_flops_per_step=flops.train_flops_per_step(program.model_def, config.model,
                                                       program.layout.vocab_size, config.batch_size,
                                                       config.data.sequence_length),
      programs={})
  dp = partitioning.data_parallel_size(mesh)
  lowerers = {
      "train_step": lambda: program_lib.lower_train_step(program.train_step, program.abstract_state, mesh,
                                                         config),
      "act_step": lambda: programs.lower_act_step(
          program, config, mesh, batch_size=int(config.eval.num_envs),
          context_length=int(config.eval.context_length or config.data.sequence_length)),
      "eval_forward": lambda: programs.lower_eval_forward(
          program, config, mesh, batch_size=programs.round_to(int(config.eval.offline_batch_size), dp)),
  }
  for name in which:
    logging.info("Compiling %s of %s for %s ...", name, config_name or "the config", target.label)
    try:
      report = programs.report(name, lowerers[name](), mesh.size)
    except Exception as e:  # pylint: disable=broad-except  # XLA:TPU refuses a program over HBM at compile
      oom = _oom_bytes(e)
      if oom is None:
        raise
      fit.fits = False
      fit.problem = _problem(name, oom[0], target, config, mesh, available=oom[1])
      raise DoesNotFit(fit.problem, oom[0]) from None
    fit.programs[name] = report
    if report.peak_bytes > target.chip.hbm_bytes:
      fit.fits = False
      fit.problem = _problem(name, report.peak_bytes, target, config, mesh)
      raise DoesNotFit(fit.problem, report.peak_bytes)
  return fit


def _problem(name: str, needed: int, target, config, mesh, available: int | None = None) -> str:
  available = target.chip.hbm_bytes if available is None else available
  return (f"{name} does not fit on {target.label}: it needs {needed / GIB:.2f} GiB per chip, a "
          f"{target.chip.generation} chip has {available / GIB:.2f} GiB for it (mesh "
          f"{dict(mesh.shape)}, batch {config.batch_size} = {config.batch_size / mesh.size:g} per chip, "
          f"remat_policy={config.model.remat_policy}); try {advice(config, mesh, target, needed)}")


def describe(fit: FitReport) -> str:
  """The per-chip figures as a few readable lines."""
  lines = [f"{fit.config_name or 'config'} on {fit.target} ({fit.chips} chips x {fit.hbm_bytes / GIB:.2f} GiB): "
           f"mesh {fit.mesh}, batch {fit.batch_size} ({fit.batch_per_chip:g} per chip) x {fit.sequence_length}, "
           f"{fit.parameters / 1e6:.0f}M parameters, remat {fit.remat_policy}, attention {fit.attention_impl}"]
  for report in fit.programs.values():
    lines.append(f"  {report.name}: {report.peak_bytes / GIB:.2f} GiB per chip "
                 f"({100 * report.peak_bytes / fit.hbm_bytes:.0f}% of HBM) = arguments "
                 f"{report.argument_bytes / GIB:.2f} + outputs {report.output_bytes / GIB:.2f} - aliased "
                 f"{report.alias_bytes / GIB:.2f} + temporaries {report.temp_bytes / GIB:.2f}; compiled in "
                 f"{report.compile_s:.0f}s")
    for size, type_, op in report.largest_buffers[:3]:
      lines.append(f"    largest: {size / 2**20:8.1f} MiB {type_} {op}")
    for kind, c in report.collectives.items():
      lines.append(f"    {kind:18s} {c['executions']:5d} per step, {c['bytes'] / 2**20:9.1f} MiB "
                   f"({c['wire_bytes'] / 2**20:.1f} MiB on the wire), groups of {c['group_sizes']}")
  lines.append("  fits" if fit.fits else f"  DOES NOT FIT: {fit.problem}")
  return "\n".join(lines)
