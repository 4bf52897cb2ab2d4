"""The evaluator modules that `config.evals` chooses between by `type`, and the one interface they share.

An evaluator is built from its `EvalSpec` (its config.evals entry) and the run's `EvalContext`:
  report_key         where gato-eval's report keeps its section ("tasks", "offline", "captions")
  enabled()          whether it has anything to evaluate (tasks, a captions dataset)
  run(model, step)   its report section for a model on one device
  scalars(section)   the section as flat `<name>/...` scalars (TensorBoard, metrics JSON, best_metric)
"""

from typing import Any, Protocol

from gato_jax.evaluation.captions import CaptionsEvaluator
from gato_jax.evaluation.context import EvalContext
from gato_jax.evaluation.control import ControlEvaluator
from gato_jax.evaluation.offline import OfflineEvaluator
from gato_jax.evaluation.options import EvalSpec

EVALUATORS = {"offline": OfflineEvaluator, "control": ControlEvaluator, "captions": CaptionsEvaluator}


class Evaluator(Protocol):
  report_key: str
  spec: EvalSpec

  def enabled(self) -> bool: ...

  def run(self, model, step: int) -> dict[str, Any]: ...

  def scalars(self, section: dict[str, Any]) -> dict[str, float]: ...


def build(context: EvalContext, specs=None) -> list[Evaluator]:
  """The evaluators of `specs` (default: every entry of config.evals), in table order."""
  return [EVALUATORS[spec.type](spec, context) for spec in (context.specs if specs is None else specs)]
