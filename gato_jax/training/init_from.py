"""Starting a fresh run from another run's parameters (`config.init_from`), onto this run's mesh.

`config.init_from` names, locally or in a bucket (gs://...):
  WORKDIR             its latest committed checkpoint (or its exported `params/` when it has none)
  WORKDIR@STEP        that checkpoint step
  WORKDIR@best        the step that run kept as its best (its checkpoint.best_metric)
  WORKDIR/checkpoints/STEP, or any checkpoints/ folder
  PARAMS_DIR          an exported params directory (`<workdir>/params`, checkpointing.export_params)
Only the parameters are read: the optimizer state, step, rng and data iterator stay the new run's own
(fresh), and so do its mixture, schedule and workdir. The loop calls `apply` only for a fresh run:
resuming the run's own checkpoint takes precedence, so a restart continues exactly.

The parameters are restored by Orbax onto abstract arrays carrying the new state's shardings, so a
source written on any mesh (say data=2 x fsdp=2 x tensor=2) lands directly on any other (say 1 x 8).
Before reading, the source is checked against this run's model: a different vocabulary layout or
preset (from the source's recorded config) or parameter tree is one line naming the first differing
key or parameter and both values / shapes.
"""

import json
import os
import re
from typing import Any, Optional

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from gato_jax import checkpointing
from gato_jax.model import options

_SPEC = re.compile(r"^(?P<path>.+?)@(?P<step>\d+|best)$")


class InitFromError(ValueError):
  """`config.init_from` names nothing loadable, or parameters that do not fit this run's model."""


def _path(path: str) -> epath.Path:
  path = os.path.expanduser(path)
  return epath.Path(path) if "://" in path else epath.Path(os.path.abspath(path))


def resolve(spec: str) -> tuple[epath.Path, str]:
  """(directory, "checkpoint" | "params") that `spec` (PATH[@STEP]) names; InitFromError otherwise."""
  match = _SPEC.match(spec)
  path, step = (match["path"], match["step"]) if match else (spec, None)
  root = _path(path)
  where = f"config.init_from={spec!r}"
  if not root.is_dir():
    raise InitFromError(f"{where}: {root} does not exist")
  if step == "best":
    step = _best_step(root, where)
  elif step is not None:
    step = int(step)
  if (root / checkpointing.STATE).is_dir():  # one checkpoint step
    if step is not None and str(step) != root.name:
      raise InitFromError(f"{where}: {root} is the checkpoint of step {root.name}; drop @{step}")
    return root, "checkpoint"
  checkpoints = root / "checkpoints" if (root / "checkpoints").is_dir() else root
  steps = checkpointing.committed_steps(checkpoints) if checkpoints.is_dir() else []
  if step is not None:
    if step not in steps:
      raise InitFromError(f"{where}: no committed checkpoint of step {step} in {checkpoints} "
                          f"(steps: {steps or 'none'})")
    return checkpoints / str(step), "checkpoint"
  if steps:
    return checkpoints / str(steps[-1]), "checkpoint"
  for params in (root / "params", root):
    if (params / "_CHECKPOINT_METADATA").exists() or (params / "_METADATA").exists():
      return params, "params"
  raise InitFromError(f"{where}: {root} is not a workdir with committed checkpoints, a checkpoint step "
                      "directory or an exported params directory")


def _best_step(root: epath.Path, where: str) -> int:
  """The step the run of workdir `root` kept by its recorded checkpoint.best_metric."""
  recorded = root / "config.json"
  section = json.loads(recorded.read_text()).get("checkpoint", {}) if recorded.exists() else {}
  if not section.get("best_metric"):
    raise InitFromError(f"{where}: {recorded} records no checkpoint.best_metric, so no step is marked "
                        "best; name a step (PATH@STEP)")
  step = checkpointing.best_step(root / "checkpoints", section["best_metric"], section.get("best_mode", "max"))
  if step is None:
    raise InitFromError(f"{where}: no checkpoint of {root} recorded {section['best_metric']!r}")
  return step


def source_config(directory: epath.Path, kind: str) -> Optional[dict]:
  """The config the source was trained with: the checkpoint's config item, else the workdir's
  config.json (beside checkpoints/ or params/); None when neither was written."""
  candidates = [directory / checkpointing.CONFIG / "metadata"] if kind == "checkpoint" else []
  workdir = directory.parent.parent if kind == "checkpoint" else directory.parent
  candidates.append(workdir / "config.json")
  for path in candidates:
    if path.exists():
      return json.loads(path.read_text())
  return None


def source_shapes(directory: epath.Path, kind: str) -> dict[str, tuple[int, ...]]:
  """'module/path/name' -> shape of every parameter the source holds (from Orbax metadata only)."""
  item = directory / checkpointing.STATE if kind == "checkpoint" else directory
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    tree = checkpointer.metadata(item).item_metadata.tree
  if kind == "checkpoint":
    tree = tree["params"]
  return {_key(path): tuple(m.shape) for path, m in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _key(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def check_compatible(spec: str, source: dict[str, tuple], target: dict[str, tuple],
                     trained_config: Optional[dict], config) -> None:
  """One InitFromError line for the first difference: vocabulary / preset keys, then parameters."""
  if trained_config is not None:
    mismatches = [m.replace("trained", "source") for m in options.config_mismatches(trained_config, config)]
    if mismatches:
      raise InitFromError(f"config.init_from={spec!r} was trained with a different vocabulary or model "
                          f"preset: {'; '.join(mismatches)}")
  for name in sorted(set(source) | set(target)):
    if source.get(name) != target.get(name):
      shape = lambda s: "absent" if s is None else f"of shape {s}"
      raise InitFromError(f"config.init_from={spec!r}: parameter {name} is {shape(source.get(name))} in "
                          f"the source but {shape(target.get(name))} in this run's model")


def load_params(spec: str, abstract_params: Any, config=None) -> Any:
  """The params `spec` names, checked against and restored onto `abstract_params` (ShapeDtypeStructs
  carrying the target shardings)."""
  directory, kind = resolve(spec)
  target = {_key(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  check_compatible(spec, source_shapes(directory, kind), target,
                   source_config(directory, kind) if config is not None else None, config)
  logging.info("init_from: reading the parameters of %s (%s).", directory, kind)
  return checkpointing.load_params(directory, abstract_params)


def check_before_writing(config, abstract_params, workdir: str) -> None:
  """Checks `config.init_from` before the run writes anything (config.json, checkpoints/), so a bad
  one leaves the new workdir as it was. Skipped when the workdir has checkpoints: resuming ignores
  init_from."""
  spec = str(config.get("init_from", "") or "")
  checkpoints = os.path.join(workdir, "checkpoints")
  if not spec or (os.path.isdir(checkpoints) and checkpointing.committed_steps(checkpoints)):
    return
  directory, kind = resolve(spec)
  target = {_key(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  try:
    shapes = source_shapes(directory, kind)
  except Exception as e:  # pylint: disable=broad-except  # Orbax's metadata errors, as one line
    raise InitFromError(f"config.init_from={spec!r}: cannot read the parameters' metadata of {directory} "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
                        ) from e
  check_compatible(spec, shapes, target, source_config(directory, kind), config)


def apply(config, state):
  """`state` (a fresh TrainState) with its params replaced by those of `config.init_from`, on the
  same shardings; the state itself when init_from is empty."""
  spec = str(config.get("init_from", "") or "")
  if not spec:
    return state
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state.params)
  params = load_params(spec, abstract, config)
  logging.info("init_from: started from the parameters of %s; optimizer state, step and data are fresh.",
               spec)
  return state.replace(params=params)
