"""Device mesh, the logical-axis rules table, and the shardings of params, optimizer state and batch.

Every sharding decision of gato-jax is made here. The model annotates each parameter and the
activations that matter with logical axis names (gato_jax/model/logical.py); a rules table maps them
onto the three mesh axes:

  data    pure data parallelism: params replicated, batch split
  fsdp    batch split AND params/optimizer state split along `embed` (ZeRO-3 / FSDP style)
  tensor  Megatron-style tensor parallelism: heads, mlp and vocab split

Any axis may be 1. Parameters and activations use different names (`embed` vs `activation_embed`,
as in MaxText), so each gets its mesh axes from its own rule and never from the order of the table:
a parameter [vocab, embed] is split (tensor, fsdp), an activation [activation_batch, activation_length,
activation_embed] is split ((data, fsdp), None, None). Rules still resolve like flax.linen's
`logical_to_mesh_axes` (in table order, a name takes its mesh axes only if no other dimension of the
array uses them). A dimension the mesh axes do not divide is replicated instead (logged), so small
tables (e.g. 3 input channels of the patch encoder) never block a mesh shape.

From config (no code edits): `config.mesh.rules` replaces the default table, `config.mesh.extra_rules`
goes in front of it (a name's first rule wins), e.g. sequence sharding of the activations:
  c.mesh.extra_rules = (("activation_length", "tensor"),)
`rules_from_config(config.mesh)` gives the table once; it travels beside the mesh as an argument of
every helper that maps logical names (no module state keyed by mesh, so a mesh made any other way
never silently gets another config's table, or the default one).
Multi-slice (TPU pods over DCN): `config.mesh.num_slices` > 1 lays `config.mesh.dcn_axis` (data or
fsdp) across slices and the rest within each slice (`mesh_utils.create_hybrid_device_mesh`).
"""

import contextlib
import math
import os
from typing import Any, Mapping, Sequence

from absl import logging
import flax.core.spmd
import flax.linen as nn
from flax import nnx
import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # mesh axes the batch is split over
# config.mesh keys besides the axis sizes.
MESH_OPTIONS = ("rules", "extra_rules", "num_slices", "dcn_axis")

# Where parameters live.
PARAM_RULES = (
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("layers", None),
    # The patch encoder's channels and features, and the position tables' rows: small, replicated.
    ("conv_in", None),
    ("conv_out", None),
    ("patch_features", None),
    ("positions", None),
)
# Where activations (and the KV cache) live: the batch over data x fsdp, heads / mlp / vocab over tensor.
ACTIVATION_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)
LOGICAL_AXIS_RULES = ACTIVATION_RULES + PARAM_RULES

class MeshConfigError(ValueError):
  """A mesh shape or batch size that does not fit the devices."""


def _factorizations(n: int, parts: int) -> list[tuple[int, ...]]:
  if parts == 1:
    return [(n,)]
  out = []
  for d in range(1, n + 1):
    if n % d == 0:
      out.extend((d,) + rest for rest in _factorizations(n // d, parts - 1))
  return out


def _fitting_shapes(num_devices: int, limit: int = 6) -> str:
  shapes = _factorizations(num_devices, len(MESH_AXES))
  # Prefer the shapes people use: data-parallel heavy first.
  shapes.sort(key=lambda s: (-s[0], -s[1]))
  return "; ".join(" x ".join(f"{a}={s}" for a, s in zip(MESH_AXES, shape)) for shape in shapes[:limit])


def resolve_mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) from config, -1 filled; refuses shapes that do not use exactly the devices."""
  unknown = sorted(set(dict(mesh_config)) - set(MESH_AXES) - set(MESH_OPTIONS))
  if unknown:
    raise MeshConfigError(f"config.mesh has unknown keys {unknown}; the mesh axes are {MESH_AXES}, the "
                          f"options {MESH_OPTIONS}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  described = " x ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
  if any(s == 0 or s < -1 for s in sizes):
    raise MeshConfigError(f"config.mesh {described}: every axis must be a positive size or -1 (fill)")
  if sizes.count(-1) > 1:
    raise MeshConfigError(f"config.mesh {described}: at most one axis may be -1 (fill)")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise MeshConfigError(
          f"config.mesh {described}: the fixed axes ({known} devices) do not divide the {num_devices} "
          f"devices; shapes that fit: {_fitting_shapes(num_devices)}")
    sizes[sizes.index(-1)] = num_devices // known
  elif known != num_devices:
    raise MeshConfigError(
        f"config.mesh {described} needs {known} devices but there are {num_devices} "
        f"({jax.process_count()} process(es) x {jax.local_device_count()} local); shapes that fit: "
        f"{_fitting_shapes(num_devices)} (or set one axis to -1)")
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, Any], devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """The (data, fsdp, tensor) mesh over every process's devices, all axes Auto (rule-driven). Its
  rules table is `rules_from_config(mesh_config)`, passed beside it to every helper below."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  num_slices = int(dict(mesh_config).get("num_slices", 1) or 1)
  auto = (AxisType.Auto,) * len(MESH_AXES)
  if num_slices > 1:
    ici, dcn = hybrid_shapes(shape, num_slices, dict(mesh_config).get("dcn_axis", "data"))
    mesh = jax.sharding.Mesh(hybrid_device_array(ici, dcn, devices), MESH_AXES, axis_types=auto)
  else:
    mesh = jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
  return mesh


def hybrid_shapes(shape: Sequence[int], num_slices: int, dcn_axis: str) -> tuple[tuple, tuple]:
  """(per-slice ICI shape, across-slice DCN shape) of a (data, fsdp, tensor) mesh: `dcn_axis` spans
  the slices, since only its collectives (gradient all-reduce for data, once-per-layer all-gathers for
  fsdp) are cheap enough for the data-centre network; tensor parallelism never leaves a slice."""
  if dcn_axis not in BATCH_AXES:
    raise MeshConfigError(f"config.mesh.dcn_axis={dcn_axis!r}; expected one of {BATCH_AXES} (tensor "
                          "parallelism stays within a slice)")
  index = MESH_AXES.index(dcn_axis)
  if shape[index] % num_slices:
    raise MeshConfigError(f"config.mesh.{dcn_axis}={shape[index]} must be a multiple of "
                          f"config.mesh.num_slices={num_slices} (the axis that spans the slices)")
  ici, dcn = list(shape), [1] * len(shape)
  ici[index], dcn[index] = shape[index] // num_slices, num_slices
  return tuple(ici), tuple(dcn)


def hybrid_device_array(ici_shape: Sequence[int], dcn_shape: Sequence[int], devices: Sequence[Any]) -> np.ndarray:
  """Devices laid out [ici * dcn] with each slice a contiguous block of the DCN axis.

  Slices are the devices' `slice_index` (TPU multi-slice), else their processes (GPU hosts over the
  data-centre network); a single process without slices (CPU tests) is cut into equal slices in
  device order.
  """
  if hasattr(devices[0], "slice_index"):
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
  if len({d.process_index for d in devices}) > 1:
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices, process_is_granule=True)
  per_slice = math.prod(ici_shape)
  slices = [np.asarray(devices[i:i + per_slice], dtype=object).reshape(ici_shape)
            for i in range(0, len(devices), per_slice)]
  blocks = np.empty(tuple(dcn_shape), dtype=object)
  for i, block in enumerate(slices):
    blocks.flat[i] = block
  return np.block(blocks.tolist())


def rules_from_config(mesh_config: Mapping[str, Any]) -> tuple:
  """The rules table of `config.mesh`: `rules` (or the default) with `extra_rules` in front."""
  values = dict(mesh_config)
  base = check_rules(values.get("rules") or LOGICAL_AXIS_RULES, "config.mesh.rules")
  return check_rules(values.get("extra_rules") or (), "config.mesh.extra_rules") + base


def check_rules(rules, where: str) -> tuple:
  """Rules as a tuple of (name, None | mesh axis | tuple of mesh axes); one clear line if malformed."""
  out = []
  for rule in rules:
    name, axes = rule if isinstance(rule, (tuple, list)) and len(rule) == 2 else (None, None)
    axes = tuple(axes) if isinstance(axes, list) else axes
    names = () if axes is None else (axes,) if isinstance(axes, str) else axes
    if not isinstance(name, str) or not isinstance(names, tuple) or any(a not in MESH_AXES for a in names):
      raise MeshConfigError(f"{where}: rule {rule!r} must be (logical name, None | mesh axis | tuple of "
                            f"mesh axes) with mesh axes from {MESH_AXES}")
    out.append((name, axes))
  return tuple(out)


def resolve_rules(extra=(), base=LOGICAL_AXIS_RULES) -> tuple:
  """`extra` rules in front of `base` (the default table): what config.mesh.extra_rules does."""
  return rules_from_config({"rules": base, "extra_rules": extra})


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, grad_accum_steps: int = 1,
                     process_count: int | None = None) -> None:
  """Refuses a global batch that cannot be split over data x fsdp (per micro-batch) and processes."""
  process_count = jax.process_count() if process_count is None else process_count
  dp = data_parallel_size(mesh)
  unit = math.lcm(dp * grad_accum_steps, process_count)
  if batch_size <= 0 or batch_size % unit:
    lower = max(unit, batch_size // unit * unit)
    upper = (batch_size // unit + 1) * unit
    parts = [f"data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']} = {dp}"]
    if grad_accum_steps > 1:
      parts.append(f"times grad_accum_steps = {grad_accum_steps}")
    if process_count > 1:
      parts.append(f"and the {process_count} processes")
    raise MeshConfigError(
        f"config.batch_size={batch_size} must be a multiple of {unit} ({', '.join(parts)}); "
        f"nearest that fit: {lower} or {upper}")


def logical_to_mesh_spec(logical_axes: Sequence[str | None] | None, shape: Sequence[int] | None = None,
                         mesh: jax.sharding.Mesh | None = None, *, rules: Sequence[tuple[str, Any]]) -> P:
  """The mesh PartitionSpec of one array from its logical axis names under `rules` (see the module
  docstring); with `shape` and `mesh`, a dimension the mesh axes do not divide is replicated."""
  if logical_axes is None:
    return P()
  spec = list(nn.logical_to_mesh_axes(tuple(logical_axes), rules))
  if shape is not None and mesh is not None:
    for i, (axes, size) in enumerate(zip(spec, shape)):
      if axes is None:
        continue
      split = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if size % split:
        logging.info("Replicating dimension %d (%s, size %d) of a %s array: %s does not divide it.",
                     i, logical_axes[i], size, tuple(shape), axes)
        spec[i] = None
  return P(*spec)


def _variable_logical_axes(variable) -> tuple[str | None, ...] | None:
  metadata = variable.get_metadata()
  names = metadata.get("out_sharding") or metadata.get("sharding_names") or metadata.get("sharding")
  if not names:
    return None
  names = tuple(names)
  known = {name for name, _ in LOGICAL_AXIS_RULES}
  unknown = [n for n in names if n is not None and n not in known]
  if unknown:
    logging.warning("Logical axis names %s are not in partitioning.LOGICAL_AXIS_RULES; replicating them.",
                    unknown)
  return names


def logical_axes(state) -> Any:
  """The logical axis names of every Variable of an nnx State, as a pure dict (None = unannotated)."""
  names = jax.tree.map(lambda v: v.replace(_variable_logical_axes(v)), state,
                       is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(names)


def tree_shardings(abstract_tree, axes_tree, mesh: jax.sharding.Mesh, *, rules) -> Any:
  """NamedShardings for a tree of arrays/ShapeDtypeStructs from a matching tree of logical axes."""
  def one(x, axes):
    return NamedSharding(mesh, logical_to_mesh_spec(axes, x.shape, mesh, rules=rules))
  return jax.tree.map(one, abstract_tree, axes_tree, is_leaf=lambda x: x is None or isinstance(x, tuple))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def batch_shardings(shapes: Mapping[str, Sequence[int]], mesh: jax.sharding.Mesh) -> dict[str, NamedSharding]:
  """NamedShardings of a batch's features from their per-example shapes (features.feature_shapes)."""
  return {name: batch_sharding(mesh, 1 + len(shape)) for name, shape in shapes.items()}


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                 global_batch_size: int) -> dict[str, jax.Array]:
  """Per-process numpy rows -> global jax.Arrays split over data x fsdp.

  Process p must hold rows [p * B / P, (p + 1) * B / P) of the global batch: with `jax.make_mesh`
  each process's devices form a contiguous block of the (data, fsdp) axes, so that is its slice.
  """
  out = {}
  for name, value in local_batch.items():
    value = np.asarray(value)
    sharding = batch_sharding(mesh, max(value.ndim, 1))
    out[name] = jax.make_array_from_process_local_data(
        sharding, value, (global_batch_size,) + value.shape[1:])
  return out


@contextlib.contextmanager
def axis_rules(mesh: jax.sharding.Mesh, rules):
  """Makes `mesh` current and `rules` active, for model code that constrains activations."""
  with jax.set_mesh(mesh), flax.core.spmd.logical_axis_rules(rules):
    yield


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, heartbeat_timeout_seconds: int = 100,
                           initialization_timeout: int = 300) -> bool:
  """Joins the processes of a multi-host job; returns whether jax.distributed was initialized.

  With explicit arguments (local launchers, GKE) they are used as given. With none, on TPU VMs,
  SLURM or Open MPI jax detects them itself; elsewhere there is nothing to join and this is a no-op.
  A peer that stops sending heartbeats for `heartbeat_timeout_seconds` makes every other process
  fail instead of hanging in a collective.
  """
  # CPU collectives across processes need gloo; harmless on TPU / GPU backends.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  explicit = coordinator_address is not None or num_processes is not None or process_id is not None
  if explicit:
    if None in (coordinator_address, num_processes, process_id):
      raise ValueError("--coordinator_address, --num_processes and --process_id go together; got "
                       f"{coordinator_address!r}, {num_processes!r}, {process_id!r}")
    if num_processes == 1:
      return False
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
  elif not _cluster_detectable():
    return False
  logging.info("jax.distributed.initialize(%s, num_processes=%s, process_id=%s)", coordinator_address,
               num_processes, process_id)
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                             initialization_timeout=initialization_timeout)
  return True


def _cluster_detectable() -> bool:
  """Whether jax's own cluster detection (TPU VM / GKE, SLURM, Open MPI, ...) recognises this job.

  The one private import left: jax has no public way to ask this without calling
  jax.distributed.initialize, which refuses to run once any JAX computation has happened (tests,
  notebooks) and so cannot serve as the probe.
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top  # private API, guarded below
    return any(not env.opt_in_only_method and env.is_env_present()
               for env in clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
  except (ImportError, AttributeError):  # the private API moved: fall back to the usual variables
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
