"""A training run's checkpoints as gato-eval reads them: committed steps, the step asked for (a number,
the latest or "best"), its recorded config, and its params as a model on one device.

Only committed checkpoints are read, by the one definition gato-train uses too
(`checkpoint_files.committed_steps`: Orbax's own listing); the step-like entries left out are logged
with the reason. Evaluation never writes into the checkpoint directory, so it can run beside the
training that is filling it.
"""

import dataclasses
import json
import os
from typing import Optional

from absl import logging
import jax
import numpy as np

from gato_jax import checkpoint_files
from gato_jax.evaluation.datasets import EvaluationError
from gato_jax.model import default_model_fn, options
from gato_jax.model.definition import abstract_model

BEST = "best"


@dataclasses.dataclass
class Checkpoint:
  step: int
  path: str


def committed_checkpoints(workdir: str) -> list[Checkpoint]:
  """Committed checkpoints of `workdir`, oldest first (what gato-train would resume from)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return [Checkpoint(step, os.path.join(directory, checkpoint_files.NAME_FORMAT.build_name(step)))
          for step in checkpoint_files.committed_steps(directory)]


def log_skipped(workdir: str, already: set | None = None) -> dict[str, str]:
  """Logs each step-like entry of the checkpoint directory that is not evaluated, and why."""
  skipped = checkpoint_files.skipped_entries(os.path.join(workdir, "checkpoints"))
  for name, why in skipped.items():
    if already is None or name not in already:
      logging.warning("Not evaluating checkpoints/%s: %s.", name, why)
  return skipped


def checkpoint_config(checkpoint: Checkpoint, workdir: str) -> Optional[dict]:
  """The resolved config the checkpoint was trained with (its `config` item, else workdir/config.json)."""
  for path in (os.path.join(checkpoint.path, "config", "metadata"), os.path.join(workdir, "config.json")):
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
  return None


def find_checkpoint(workdir: str, step=None) -> Checkpoint:
  """The checkpoint of `step`: an int, "best" (by the run's checkpoint.best_metric) or None (the
  latest), with a clear error when there is none."""
  found = committed_checkpoints(workdir)
  skipped = log_skipped(workdir)
  if not found:
    where = os.path.join(workdir, "checkpoints")
    left_out = "; ".join(f"{name}: {why}" for name, why in skipped.items())
    raise EvaluationError(f"no checkpoint in {where}" + ("" if os.path.isdir(workdir) else
                                                         f" ({workdir} does not exist)")
                          + (f" (skipped {left_out})" if left_out else "")
                          + "; train first: gato-train --config <experiment> --workdir " + workdir)
  if step is None:
    return found[-1]
  if step == BEST:
    step = best_step(workdir, found[-1])
  for c in found:
    if c.step == int(step):
      return c
  raise EvaluationError(f"no checkpoint of step {step} in {workdir}/checkpoints; there are steps "
                        f"{[c.step for c in found]}")


def best_step(workdir: str, latest: Checkpoint) -> int:
  """The step the run kept as its best (its recorded checkpoint.best_metric / best_mode)."""
  trained = checkpoint_config(latest, workdir) or {}
  section = trained.get("checkpoint", {})
  metric, mode = section.get("best_metric", ""), section.get("best_mode", "max")
  if not metric:
    raise EvaluationError(f"{workdir} was trained without config.checkpoint.best_metric, so no checkpoint "
                          "is marked best; name a step instead")
  step = checkpoint_files.best_step(os.path.join(workdir, "checkpoints"), metric, mode)
  if step is None:
    raise EvaluationError(f"no checkpoint of {workdir} recorded {metric!r} (checkpoint.best_metric): "
                          "was an evaluator that reports it run during training (config.evals)?")
  logging.info("Best checkpoint by %s (%s): step %d.", metric, mode, step)
  return step


def load_model(config, layout, checkpoint: Checkpoint, workdir: str):
  """The Gato of `checkpoint` on one device; refuses a config that does not match its params."""
  trained = checkpoint_config(checkpoint, workdir)
  if trained is not None:
    mismatches = options.config_mismatches(trained, config)
    if mismatches:
      raise EvaluationError(f"checkpoint {checkpoint.path} was trained with a different model than "
                            f"the config asks for: {'; '.join(mismatches)}. Evaluate with the training's "
                            "config (it is saved as <workdir>/config.json).")
  model_def, abstract_state = abstract_model(default_model_fn(options.for_inference(config), layout))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          model_def.abstract_params)
  try:
    params = checkpoint_files.load_params(checkpoint.path, abstract)
  except Exception as e:  # pylint: disable=broad-except
    if not os.path.isdir(checkpoint.path):
      raise FileNotFoundError(f"checkpoint {checkpoint.path} was deleted while being read") from e
    raise EvaluationError(f"checkpoint {checkpoint.path} does not fit the model of this config "
                          f"({type(e).__name__}: {str(e)[:600]}); evaluate with the training's config") from None
  model_state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)
  return model_def.merge(params, jax.random.key(0), model_state)
