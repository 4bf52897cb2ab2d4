"""The `control` evaluator: closed-loop rollouts of the agent in each task's simulator, scored against
the data's expert and random returns."""

import os
import time
from typing import Any, Optional

from absl import logging
import numpy as np

from gato_jax.acting import agent as agent_lib
from gato_jax.evaluation import datasets, replay, report as report_lib, rollout, scores
from gato_jax.evaluation.context import EvalContext
from gato_jax.evaluation.options import EvalSpec
from gato_jax.model import options as model_options

SCALARS = ("normalized_score", "mean_return", "success_rate")


class ControlEvaluator:
  """N episodes per task (config.eval.episodes_per_task) with the GIF of each task's first one."""
  report_key = "tasks"

  def __init__(self, spec: EvalSpec, context: EvalContext):
    self.spec, self.context = spec, context
    self.gif_requests: list = []  # filled by run(); rendered by the runner in a child process
    self.gifs = True  # in-training rollouts keep the scores only

  def tasks(self) -> list[str]:
    return [n for n in self.context.task_names if n not in self.context.offline_only]

  def enabled(self) -> bool:
    return bool(self.tasks())

  def run(self, model, step: int) -> dict[str, Any]:
    """{task: its report entry}; each task's first episode is queued as a GIF request (`gifs`)."""
    del step  # the seeds are the data's evaluation range, the same for every checkpoint
    self.gif_requests = []
    entries = {}
    for name in self.tasks():
      entries[name], gif = self.task(model, name, self.gifs)
      if gif:
        self.gif_requests.append(gif)
    return entries

  def task(self, model, name: str, gifs: bool = True) -> tuple[dict, Optional[dict]]:
    """(the task's report entry, a GIF request for its first episode) after N episodes."""
    c, e = self.context.config, self.spec.options
    ds = self.context.datasets[name]
    length = e.context_length or int(c.data.sequence_length)
    prompt_tokens = e.prompt_tokens or int(c.data.get("max_prompt_fraction", 0.5) * length)
    text = (self.context.text_tokenizer if any(f.modality == "text" for _, f in ds.spec.observation_fields())
            else None)
    demos = (datasets.successful_episodes(ds.validation_episodes(max_episodes=32)) if e.prompt == "demo"
             else [])
    agent = None
    if self.context.actor_for is not None:  # gato-eval --server: a served checkpoint acts
      actor = self.context.actor_for(name, demos)
    else:
      agent = agent_lib.GatoAgent(model, self.context.layout, ds.spec, text, context_length=length,
                                  greedy=e.greedy, temperature=e.temperature, seed=e.seed,
                                  prompt_tokens=prompt_tokens, roll_keep=e.roll_keep,
                                  chunk_dtype=model_options.chunk_dtype(c))
      actor = agent_lib.GatoActor(agent, demos, seed=e.seed)
    if e.max_steps and e.max_steps < ds.task.max_steps:
      logging.warning("%s: episodes capped at %d steps, below the %d of the data: the expert and random "
                      "returns were measured over longer episodes, so the score is biased low.", name,
                      e.max_steps, ds.task.max_steps)
    seeds = rollout.evaluation_seeds(ds.build_seed, e.episodes_per_task)
    start = time.perf_counter()
    progress = lambda done, total: logging.info("%s: %d/%d episodes (%.0f s)", name, done, total,
                                                time.perf_counter() - start)
    results = rollout.run_episodes(ds.task, actor, seeds, num_envs=e.num_envs, max_steps=e.max_steps,
                                   failure_return=ds.random_return, progress=progress)
    score = scores.TaskScore(name, ds.domain, [r.episode_return for r in results], [r.length for r in results],
                             ds.expert_return, ds.random_return, sum(r.crashed for r in results), list(seeds),
                             e.confidence, e.bootstrap_samples)
    entry = score.to_dict()
    successes = [r.success for r in results if r.success is not None]
    if successes:
      entry["success_rate"] = float(np.mean(successes))
    entry["errors"] = [r.error for r in results if r.error][:5]
    entry["seconds"] = time.perf_counter() - start
    if agent is not None:
      entry["rolls"] = agent.rolls
    gif = None
    if gifs and e.gif and results and results[0].actions:
      gif = replay.request(ds.task, results[0].seed, results[0].actions,
                           os.path.join(report_lib.eval_dir(self.context.workdir), "gifs", f"{name}.gif"),
                           max_frames=e.gif_max_frames)
    logging.info("%s: normalised score %.3f [%.3f, %.3f], mean return %.2f (expert %.2f, random %.2f), "
                 "%d episodes in %.0f s", name, entry["normalized_score"], entry["score_ci_low"],
                 entry["score_ci_high"], entry["mean_return"], ds.expert_return, ds.random_return,
                 len(results), entry["seconds"])
    return entry, gif

  def scalars(self, section: dict[str, Any]) -> dict[str, float]:
    """`<name>/<task>/<score>` and the mean normalised score over tasks, `<name>/normalized_score`."""
    out = {f"{self.spec.name}/{task}/{key}": float(entry[key])
           for task, entry in section.items() for key in SCALARS if key in entry}
    if section:
      out[f"{self.spec.name}/normalized_score"] = float(np.mean([e["normalized_score"] for e in section.values()]))
    return out
