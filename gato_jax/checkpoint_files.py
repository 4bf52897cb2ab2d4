"""A run's checkpoint directory as readers see it: committed steps, the best step by its recorded metric,
params alone (exported, or out of a training checkpoint) and the config record. Nothing here trains or
writes a training checkpoint (gato_jax/checkpointing.py does), so evaluation and init_from stand on it.
"""

import json
import os
from typing import Any

from etils import epath
import jax
import orbax.checkpoint as ocp

STATE, DATA_ITERATOR, CONFIG, METRICS = "state", "data_iterator", "config", "metrics"
# The one definition of a step directory's name and of "committed", for training and evaluation.
NAME_FORMAT = ocp.step.standard_name_format()
BEST_MODES = ("max", "min")


def absolute(path) -> epath.Path:
  """Orbax (tensorstore) refuses relative local paths; bucket URLs (gs://...) are left as they are."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


def committed_steps(directory) -> list[int]:
  """The committed checkpoint steps of `directory`, oldest first (Orbax's own listing)."""
  return sorted(m.step for m in NAME_FORMAT.find_all(absolute(directory)))


def skipped_entries(directory) -> dict[str, str]:
  """{name: why it is not a committed checkpoint} for every step-like entry of `directory` that Orbax
  does not list."""
  directory = absolute(directory)
  if not directory.exists():
    return {}
  committed = {NAME_FORMAT.build_name(s) for s in committed_steps(directory)}
  out = {}
  for name in sorted(p.name for p in directory.iterdir()):
    if name in committed or not name[:1].isdigit():
      continue
    if ".orbax-checkpoint-tmp" in name:
      out[name] = "a save in progress or interrupted (Orbax's temporary directory)"
    elif ".unreadable-" in name:
      out[name] = "moved aside by gato-train as unreadable"
    else:
      out[name] = "not committed (Orbax does not list it)"
  return out


def absolute(path) -> epath.Path:
  """Orbax (tensorstore) refuses relative local paths; bucket URLs (gs://...) are left as they are."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


def metric_value(metrics, name: str, mode: str) -> float:
  """`metrics[name]` for Orbax's best_fn; a checkpoint whose metrics lack it ranks last."""
  value = metrics.get(name) if isinstance(metrics, dict) else None
  if value is None:
    return float("-inf") if mode == "max" else float("inf")
  return float(value)


def best_step(directory, metric: str, mode: str = "max") -> int | None:
  """The committed step whose recorded metrics (`<step>/metrics`, written by gato-train when
  `checkpoint.best_metric` is set) rank best by `metric`; None when no step recorded it. Ranked by
  Orbax's own best_fn / best_mode, read-only."""
  if mode not in BEST_MODES:
    raise ValueError(f"config.checkpoint.best_mode={mode!r}; expected one of {BEST_MODES}")
  directory = absolute(directory)
  if not directory.exists():
    return None
  options = ocp.CheckpointManagerOptions(
      read_only=True, save_interval_steps=0, step_name_format=NAME_FORMAT, best_mode=mode,
      best_fn=lambda m: metric_value(m, metric, mode))
  with ocp.CheckpointManager(directory, options=options) as manager:
    ranked = [s for s in manager.all_steps() if _recorded(directory, s, metric)]
    if not ranked:
      return None
    step = manager.best_step()
  return step if step in ranked else None


def _recorded(directory: epath.Path, step: int, metric: str) -> bool:
  path = directory / NAME_FORMAT.build_name(step) / METRICS / METRICS
  return path.exists() and metric in json.loads(path.read_text())


def export_params(params, directory) -> None:
  """Writes the params alone (no optimizer state) to `directory`, for evaluation and serving."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(absolute(directory), params, force=True)


def load_params(path, abstract_params):
  """Params onto `abstract_params`' shardings (ShapeDtypeStructs with `.sharding`, any mesh) from an
  `export_params` directory or a training checkpoint step directory (`.../checkpoints/<step>`)."""
  path = absolute(path)
  if (path / STATE).exists():  # a training checkpoint: read only the params subtree
    handler = ocp.PyTreeCheckpointHandler()
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)
    with ocp.Checkpointer(handler) as checkpointer:
      restored = checkpointer.restore(path / STATE, args=ocp.args.PyTreeRestore(
          item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True))
    return restored["params"]
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path, abstract_params)


def config_to_json(config) -> dict[str, Any]:
  """A ConfigDict as plain JSON (what the checkpoint and `<workdir>/config.json` record)."""
  return json.loads(config.to_json_best_effort())
