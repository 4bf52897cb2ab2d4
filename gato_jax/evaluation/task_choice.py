"""Which control tasks an evaluation covers: `config.eval.tasks`, else the mixture's control tasks, and
which of them have a simulator to roll out in."""

from typing import Sequence

from absl import logging

from gato_jax.data import mixtures, pipeline, sources
from gato_jax.envs import registry
from gato_jax.evaluation.datasets import EvaluationError

MAX_LISTED = 12  # datasets named in an "unknown task" error (a data_dir may hold 170)


def resolve_tasks(config, names: Sequence[str] = ()) -> list[str]:
  """`names` (default: config.eval.tasks, comma-separated), else the control tasks of
  config.data.mixture; refuses names that are not control datasets of config.data.data_dir."""
  refs = sources.discover_datasets(config.data.data_dir)  # read once: every dataset's metadata
  if not names and "eval" in config:
    names = [t.strip() for t in str(config.eval.get("tasks", "") or "").split(",") if t.strip()]
  names = list(names) or mixture_control_tasks(config, refs)
  known = sorted(n for n, r in refs.items() if r.kind == "control")
  unknown = [n for n in names if n not in known]
  if unknown:
    shown = ", ".join(known[:MAX_LISTED]) + (f" and {len(known) - MAX_LISTED} more (gato-data list)"
                                             if len(known) > MAX_LISTED else "")
    raise EvaluationError(f"unknown task(s) {unknown}: the control datasets in {config.data.data_dir} are "
                          f"{shown or 'none'} (build or import them with gato-data)")
  if not names:
    raise EvaluationError(f"config.data.mixture={config.data.mixture!r} has no control task to roll out; "
                          "set --config.eval.tasks=<task>[,<task>...]")
  return names


def mixture_control_tasks(config, refs) -> list[str]:
  """The control tasks of config.data.mixture that can be rolled out (`refs`: the data_dir's datasets)."""
  try:
    names = mixtures.task_names(pipeline.make_mixture(config, refs))
  except (KeyError, ValueError) as e:
    raise EvaluationError(f"config.data.mixture={config.data.mixture!r}: {e}") from None
  control = [n for n in names if n in refs and refs[n].kind == "control"]
  playable = [n for n in control if can_roll_out(n, refs[n], config.data.data_dir)]
  if len(playable) < len(control):
    logging.warning("Validation loss and action accuracy only for %s: no simulator is known for them "
                    "(imported without a recorded environment; register a ControlTask with that name to "
                    "evaluate them online).", sorted(set(control) - set(playable)))
  return control


def can_roll_out(name: str, ref, data_dir: str) -> bool:
  """A control dataset gato-eval can act for: a registered ControlTask or an environment its importer
  recorded. Foreign datasets linked in place (RLDS) carry no simulator."""
  try:
    if ref.link is not None:
      return name in registry.names()
    registry.task_for_dataset(name, sources.read_metadata(name, data_dir))
  except KeyError:
    return False
  except ImportError as e:  # a host that trains without the simulators: validation only
    logging.warning("%s: no rollouts on this host (%s).", name, e)
    return False
  return True
