"""`gato-eval --server=URL`: the evaluation's rollouts acted by a served checkpoint instead of an
in-process one (same tasks, seeds, demonstrations and scores; no offline metrics, the model is remote).
"""

from gato_jax.serving.client import Client, ServedActor, ServerError

__all__ = ["ServerError", "evaluate_served"]


def evaluate_served(evaluator, url: str, timeout_s: float = 120.0) -> dict:
  """Runs `evaluator` (evaluation.evaluator.Evaluator) with every task acted through gato-serve at `url`;
  returns its report (step and checkpoint: the server's)."""
  client = Client(url, timeout_s=timeout_s)
  health = client.health()  # one line (ServerError) when the server is not there
  actors = []

  def actor_for(task, demonstrations):
    actors.append(ServedActor(client, task, demonstrations, seed=int(evaluator.config.eval.seed)))
    return actors[-1]

  evaluator.actor_for = actor_for
  try:
    report = evaluator.evaluate_model(None, int(health.get("step", -1)), f"{url} ({health.get('checkpoint', '?')})")
  finally:
    for actor in actors:
      actor.end()
  return report
