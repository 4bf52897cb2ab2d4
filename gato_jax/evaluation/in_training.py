"""The evaluators of `config.evals` that run during training (every_steps != 0), as the objects the
training loop takes: gato_jax/train.py builds them here and passes them in, so training never imports
evaluation.

The loop calls each due one with the training's own state: `offline` scores the validation splits
with the sharded params on the global mesh (every process the same batches, so the same
collectives); `control` and `captions` gather the params to every host (one collective, every
process at the same step) and then act on one local device, identically on every process, with no
further collective. Neither touches the training's rng or input iterator.
"""

from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils

from gato_jax.evaluation import registry
from gato_jax.evaluation.context import EvalContext
from gato_jax.evaluation.datasets import EvaluationError
from gato_jax.evaluation.offline import OfflineEvaluator
from gato_jax.evaluation.options import NEVER, eval_specs
from gato_jax.model import default_model_fn
from gato_jax.model.definition import abstract_model


class InTrainingEvaluator:
  """One config.evals entry as the loop runs it: `due(step, last)`, then `(step, params=, model_state=,
  model_def=, mesh=)` -> its `<name>/...` scalars."""

  def __init__(self, evaluator: registry.Evaluator, context: EvalContext, checkpoint_every_steps: int):
    self.evaluator, self.context = evaluator, context
    self.name = evaluator.spec.name
    self._checkpoint_every = checkpoint_every_steps
    self._host_def = None  # acting encodes every image position: the context's model, same params

  def due(self, step: int, last: bool) -> bool:
    return self.evaluator.spec.due(step, self._checkpoint_every, last)

  def __call__(self, step: int, *, params, model_state, model_def, mesh) -> dict[str, float]:
    if isinstance(self.evaluator, OfflineEvaluator):
      section = self.evaluator.run_sharded(step, params=params, model_state=model_state,
                                           model_def=model_def, mesh=mesh)
    else:
      section = self.evaluator.run(self._host_model(params, model_state), step)
    return self.evaluator.scalars(section)

  def _host_model(self, params, model_state):
    """The params on this process's first device (gathered from every process when there are many)."""
    if self._host_def is None:
      self._host_def = abstract_model(default_model_fn(self.context.config, self.context.layout))[0]
    device = jax.local_devices()[0]
    if jax.process_count() > 1:
      params, model_state = multihost_utils.process_allgather((params, model_state), tiled=True)
    params, model_state = jax.device_put((params, model_state), device)
    return self._host_def.merge(params, jax.random.key(0), model_state)


def build(config, workdir: str) -> list[Any]:
  """The in-training evaluators of `config.evals` that have something to evaluate; none for synthetic
  data or a mixture without control tasks (logged)."""
  specs = [s for s in eval_specs(config) if s.every_steps != NEVER]
  if not specs or config.data.mixture == "synthetic":
    return []
  try:
    context = EvalContext(config, workdir, rollouts=any(s.type == "control" for s in specs))
  except (EvaluationError, OSError) as e:  # a data_dir the loop itself then reports on
    logging.warning("No evaluation during training (%s): %s", ", ".join(s.name for s in specs), e)
    return []
  evaluators = [e for e in registry.build(context, specs) if e.enabled()]
  for e in evaluators:
    if e.report_key == "tasks":
      e.gifs = False  # GIFs are gato-eval's; training keeps the scores only
  logging.info("Evaluating during training: %s", ", ".join(
      f"{e.spec.name} ({e.spec.type}, every {e.spec.every_steps if e.spec.every_steps > 0 else 'checkpoint'})"
      for e in evaluators))
  return [InTrainingEvaluator(e, context, int(config.checkpoint_every_steps)) for e in evaluators]
