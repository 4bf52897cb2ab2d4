"""Episodes of a policy in a control task's own simulator, a batch in lockstep, crashes recorded.

The simulator, its observation format and the episode seeds are those of data_pipelines: `task.make_env`,
`task.reset(env, seed)`, `task.observation_fn`, `task.env_action`, `task.max_steps`. Evaluation seeds
come from the range `gato_jax.envs.control` reserves for gato-eval (`episode_seed(build_seed,
"evaluation", i)`), disjoint from every train, validation and return-measuring episode.

`num_envs` simulators run side by side so the agent decodes their actions as one batch; an episode
that ends stops stepping its simulator while the others finish. Every result keeps the env actions
taken, so replay.py can re-run and render an episode in another process.

A simulator that raises (make_env, reset, step, observation) ends that episode as a failure: its
return counts as min(return so far, the random policy's return), i.e. at most a score of 0, the error
is kept in the result, and that slot gets a fresh simulator. Errors of the policy itself (the model)
are NOT caught: they are bugs, not simulator crashes.
"""

import dataclasses
import time
import traceback
from typing import Any, Optional, Protocol, Sequence

from absl import logging

from gato_jax.envs import control


class Actor(Protocol):
  """What a rollout needs from a policy (the Gato agent, the random policy, an expert)."""

  def begin(self, seeds: Sequence[int]) -> None:
    """Starts one episode per seed (a batch)."""

  def act(self, observations: Sequence[Optional[dict]], raw_observations: Sequence[Any],
          envs: Sequence[Any]) -> list:
    """One action per episode; observations[i] is None once episode i has ended."""


@dataclasses.dataclass
class EpisodeResult:
  seed: int
  episode_return: float  # the return counted in the score (see the module docstring for crashes)
  length: int
  crashed: bool = False
  error: Optional[str] = None
  raw_return: float = 0.0  # the reward actually collected
  success: Optional[bool] = None  # info["success"] ever true, where the simulator reports it
  seconds: float = 0.0
  actions: list = dataclasses.field(default_factory=list)  # env actions taken (replay.py renders them)


class RandomActor:
  """The data's random policy (uniform over the action space): the 0 of normalised scores."""

  def __init__(self, spec, seed: int = 0):
    self._spec, self._seed, self._control = spec, seed, control
    self._policies = []

  def begin(self, seeds):
    self._policies = [self._control.random_policy(self._spec, self._seed * 7919 + s) for s in seeds]

  def act(self, observations, raw_observations, envs):
    return [None if o is None else p(o, r, e)
            for p, o, r, e in zip(self._policies, observations, raw_observations, envs)]


class ExpertActor:
  """The task's scripted expert (a sanity check of the evaluation loop: it should score about 1)."""

  def __init__(self, task):
    self._task = task
    self._policies = []

  def begin(self, seeds):
    self._policies = [None] * len(seeds)

  def act(self, observations, raw_observations, envs):
    actions = []
    for i, (o, r, e) in enumerate(zip(observations, raw_observations, envs)):
      if o is None:
        actions.append(None)
        continue
      if self._policies[i] is None:  # experts plan from the env's state right after reset
        self._policies[i] = self._task.make_expert(e)
      actions.append(self._policies[i](o, r, e))
    return actions


class _Slot:
  """One simulator of the batch and the episode it is running."""

  def __init__(self, task, failure_return: float):
    self.task, self.failure_return = task, failure_return
    self.env = None
    self.reset_episode(None)

  def reset_episode(self, seed):
    self.seed, self.total, self.length, self.success = seed, 0.0, 0, None
    self.actions = []
    self.observation = self.raw = None
    self.result: Optional[EpisodeResult] = None
    self.start = time.perf_counter()

  @property
  def running(self) -> bool:
    return self.seed is not None and self.result is None

  def finish(self, crashed_with: Optional[BaseException] = None, stage: str = ""):
    seconds = time.perf_counter() - self.start
    if crashed_with is None:
      self.result = EpisodeResult(self.seed, self.total, self.length, False, None, self.total, self.success,
                                  seconds, self.actions)
      return
    message = f"{stage}: {type(crashed_with).__name__}: {crashed_with}"
    logging.warning("task %s, episode seed %d, step %d: the simulator crashed in %s; counted as a failed "
                    "episode.\n%s", self.task.name, self.seed, self.length, message,
                    traceback.format_exc(limit=4))
    self.result = EpisodeResult(self.seed, min(self.total, self.failure_return), self.length, True, message,
                                self.total, False, seconds, self.actions)
    close(self.env)
    self.env = None  # a crashed simulator may be in any state: the next episode gets a new one

  def start_episode(self, seed: int):
    self.reset_episode(seed)
    try:
      if self.env is None:
        self.env = self.task.make_env(seed)
    except Exception as e:  # pylint: disable=broad-except
      return self.finish(e, "make_env")
    try:
      self.raw, _ = self.task.reset(self.env, seed)
      self.observation = self.task.observation_fn(self.raw, self.env)
    except Exception as e:  # pylint: disable=broad-except
      return self.finish(e, "reset")

  def step(self, action, limit: int):
    try:
      env_action = self.task.env_action(action)
      self.actions.append(env_action)
      self.raw, reward, terminated, truncated, info = self.env.step(env_action)
      self.total += float(reward)
      self.length += 1
      if isinstance(info, dict) and "success" in info:
        self.success = bool(self.success) or bool(float(info["success"]) > 0)
      if terminated or truncated or self.length >= limit:
        return self.finish()
      self.observation = self.task.observation_fn(self.raw, self.env)
    except Exception as e:  # pylint: disable=broad-except
      return self.finish(e, "step")


def run_episodes(task, actor: Actor, seeds: Sequence[int], *, num_envs: int = 1, max_steps: int = 0,
                 failure_return: float = 0.0, progress=None) -> list[EpisodeResult]:
  """Episodes of `actor` on `seeds` (results in seed order), `num_envs` at a time in lockstep.

  `max_steps` (0 = `task.max_steps`) caps every episode; `progress(done, total)` is called after
  each batch.
  """
  limit = max_steps or task.max_steps
  slots = [_Slot(task, failure_return) for _ in range(max(1, min(num_envs, len(seeds))))]
  results = []
  try:
    for group_start in range(0, len(seeds), len(slots)):
      group = list(seeds[group_start:group_start + len(slots)])
      active = slots[:len(group)]
      for slot, seed in zip(active, group):
        slot.start_episode(seed)
      actor.begin(group)
      while any(s.running for s in active):
        observations = [s.observation if s.running else None for s in active]
        actions = actor.act(observations, [s.raw for s in active], [s.env for s in active])
        for slot, action in zip(active, actions):
          if slot.running:
            slot.step(action, limit)
      results.extend(s.result for s in active)
      if progress is not None:
        progress(len(results), len(seeds))
  finally:
    for s in slots:
      close(s.env)
  return results


def evaluation_seeds(build_seed: int, num_episodes: int, first: int = 0) -> list[int]:
  """Env seeds of evaluation episodes first .. first + num_episodes - 1 (the range gato-eval owns)."""
  return [control.episode_seed(build_seed, "evaluation", first + i) for i in range(num_episodes)]


def close(env) -> None:
  if env is not None and hasattr(env, "close"):
    try:
      env.close()
    except Exception:  # pylint: disable=broad-except
      pass
