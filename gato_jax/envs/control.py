"""Control tasks (a simulator, its scripted expert and a TaskSpec) and the rollouts that make their episodes.

A `ControlTask` is everything a control dataset needs; `generate_episodes` runs its expert and checks
every episode against the task's spec; the evaluation reuses `make_env`, `observation_fn`, `reset` and
`random_policy` to act in the same simulator with the same observation format.

Seeds. Every episode is fully determined by one integer, its env seed, which is stored as the
episode's `episode_id`. For a build seed S the seeds of each purpose lie in disjoint ranges:
  train       S * 1_000_003 + i              (i-th attempt, rejected attempts included)
  validation  S * 1_000_003 + 400_000 + i
  returns     S * 1_000_003 + 800_000 + i    (random-policy and extra expert episodes for the metadata)
  evaluation  S * 1_000_003 + 900_000 + i    (reserved for gato-eval: never in a dataset)
"""

import dataclasses
import time
from typing import Any, Callable, Iterator, Mapping, Optional

from absl import logging
import numpy as np

from gato_jax.episodes import EpisodeError, TaskSpec, stack_steps, validate_episode

SEED_STRIDE = 1_000_003
SEED_OFFSETS = {"train": 0, "validation": 400_000, "returns": 800_000, "evaluation": 900_000}
MAX_EPISODES_PER_PURPOSE = 100_000  # attempts per range, far below the 100_000-seed gaps

# policy(observation_dict, raw_observation, env) -> action in the TaskSpec's action space
Policy = Callable[[Mapping[str, Any], Any, Any], Any]


def episode_seed(seed: int, purpose: str, index: int) -> int:
  """The env seed of the `index`-th episode of `purpose` (train / validation / returns / evaluation)."""
  if purpose not in SEED_OFFSETS:
    raise ValueError(f"unknown seed purpose {purpose!r}; expected one of {sorted(SEED_OFFSETS)}")
  if not 0 <= index < MAX_EPISODES_PER_PURPOSE:
    raise ValueError(f"episode index {index} outside [0, {MAX_EPISODES_PER_PURPOSE}) for {purpose!r}")
  if seed < 0:
    raise ValueError(f"the build seed must be >= 0, got {seed}")
  return seed * SEED_STRIDE + SEED_OFFSETS[purpose] + index


def _default_reset(env, seed: int):
  return env.reset(seed=seed)


@dataclasses.dataclass(frozen=True)
class ControlTask:
  """A simulator, how its observations map to the episode format, and a scripted expert.

  name:            the dataset name (lowercase snake_case); must equal `spec.name`.
  spec:            the TaskSpec: observation fields (modality, shape) and the action space.
  make_env:        seed -> gymnasium.Env (called once per split; episodes are seeded by `reset`).
  observation_fn:  (raw_obs, env) -> the observation dict of the spec (numpy values / strings).
  make_expert:     env -> Policy, called after every reset (experts that plan from the env's state).
  action_fn:       spec action -> env action, when they differ (None: the same).
  keep_episode:    episode -> bool; rejected episodes are counted, not written. The episode holds
                   `steps`, `episode_return` and `infos` (the env's info dict after every step).
  max_steps:       episodes stop (truncated, is_terminal=False) after this many actions.
  reset_fn:        (env, seed) -> (raw_obs, info); default `env.reset(seed=seed)`. Every episode
                   must be a function of its seed alone (the builds are checked to be deterministic).
  description:     one line for `gato-data list` and the dataset's TFDS description.
  domain:          the family it reports under (babyai, metaworld, ...); empty: the gato_jax.envs
                   folder of `make_env`, else 'custom' (registry.domain_of).
  """
  name: str
  spec: TaskSpec
  make_env: Callable[[int], Any]
  observation_fn: Callable[[Any, Any], Mapping[str, Any]]
  make_expert: Callable[[Any], Policy]
  action_fn: Optional[Callable[[Any], Any]] = None
  keep_episode: Optional[Callable[[Mapping[str, Any]], bool]] = None
  max_steps: int = 1000
  reset_fn: Callable[[Any, int], tuple] = _default_reset
  description: str = ""
  domain: str = ""

  def __post_init__(self):
    if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
      raise ValueError(f"ControlTask name {self.name!r} must be lowercase letters, digits and underscores")
    if self.spec.name != self.name:
      raise ValueError(f"ControlTask {self.name!r}: spec.name is {self.spec.name!r}; they must match")
    if self.max_steps <= 0:
      raise ValueError(f"ControlTask {self.name!r}: max_steps must be positive, got {self.max_steps}")

  def reset(self, env, seed: int):
    return self.reset_fn(env, seed)

  def env_action(self, action):
    return self.action_fn(action) if self.action_fn is not None else action


def random_policy(spec: TaskSpec, seed: int) -> Policy:
  """Uniform actions over the spec's action space (the 0 of expert-normalised scores)."""
  rng = np.random.default_rng(seed)
  a = spec.action

  def policy(observation, raw_obs, env):
    del observation, raw_obs, env
    if a.kind == "discrete":
      return np.int32(rng.integers(a.num_values[0]))
    if a.kind == "multi_discrete":
      return rng.integers(np.asarray(a.num_values)).astype(np.int32).reshape(a.shape)
    return rng.uniform(np.asarray(a.low), np.asarray(a.high)).astype(np.float32).reshape(a.shape)

  return policy


def _action_array(action, spec: TaskSpec) -> np.ndarray:
  """The stored dtype (int32 / float32); anything else is left as is for validate_episode to name."""
  a = np.asarray(action)
  if spec.action.kind == "continuous" and np.issubdtype(a.dtype, np.number):
    a = a.astype(np.float32)
  elif spec.action.kind != "continuous" and np.issubdtype(a.dtype, np.integer):
    a = a.astype(np.int32)
  return a.reshape(spec.action.shape) if a.size == spec.action.size else a


def run_episode(task: ControlTask, env, policy_factory: Callable[[Any], Policy], seed: int) -> dict:
  """One rollout: `{"steps": stacked step dict, "episode_return": float, "infos": [info, ...]}`."""
  raw_obs, _ = task.reset(env, seed)
  policy = policy_factory(env)
  steps, infos = [], []
  total = 0.0
  terminated = False
  for t in range(task.max_steps):
    observation = task.observation_fn(raw_obs, env)
    action = _action_array(policy(observation, raw_obs, env), task.spec)
    raw_obs, reward, terminated, truncated, info = env.step(task.env_action(action))
    total += float(reward)
    infos.append(info)
    steps.append({"observation": observation, "action": action, "reward": np.float32(reward),
                  "is_first": t == 0, "is_last": False, "is_terminal": bool(terminated)})
    if terminated or truncated:
      break
  if steps:
    steps[-1]["is_last"] = True
  return {"steps": stack_steps(steps), "episode_return": total, "infos": infos}


def check_episode(episode: Mapping[str, Any], task: ControlTask, split: str, index: int, seed: int):
  """validate_episode, with the dataset and split added to the message."""
  try:
    validate_episode(episode, task.spec, episode_id=f"{index} (env seed {seed})")
  except EpisodeError as e:
    raise EpisodeError(f"dataset {task.name!r}, split {split!r}: {e}") from None


class Progress:
  """Logs `done/total` with a rate every few seconds and at the end (absl logging)."""

  def __init__(self, what: str, total: int, unit: str = "episodes", every_s: float = 5.0):
    self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
    self.start = self.last = time.perf_counter()
    self.done = 0

  def update(self, done: int, extra: str = ""):
    self.done = done
    now = time.perf_counter()
    if now - self.last >= self.every_s or done >= self.total:
      self.last = now
      logging.info("%s: %d/%d %s, %.1f %s/s%s", self.what, done, self.total, self.unit, self.rate,
                   self.unit, f" ({extra})" if extra else "")

  @property
  def seconds(self) -> float:
    return time.perf_counter() - self.start

  @property
  def rate(self) -> float:
    return self.done / max(self.seconds, 1e-9)


@dataclasses.dataclass
class SplitStats:
  kept: int = 0
  rejected: int = 0
  steps: int = 0
  returns: list = dataclasses.field(default_factory=list)


def generate_episodes(task: ControlTask, num_episodes: int, seed: int, split: str = "train",
                      stats: Optional[SplitStats] = None, env=None,
                      policy: str = "expert") -> Iterator[tuple[int, dict]]:
  """Yields (env seed, episode) for `num_episodes` kept expert episodes of `split`, each validated.

  Episodes that `task.keep_episode` rejects are skipped (and counted in `stats`); a task whose expert
  keeps failing stops the build. `policy="random"` rolls out `random_policy` instead (no filtering).
  """
  if policy not in ("expert", "random"):
    raise ValueError(f"policy must be 'expert' or 'random', got {policy!r}")
  stats = stats if stats is not None else SplitStats()
  env = env if env is not None else task.make_env(seed)
  max_attempts = min(MAX_EPISODES_PER_PURPOSE, 10 * num_episodes + 20)
  progress = Progress(f"{task.name}/{split} ({policy})", num_episodes)
  attempt = kept = 0
  while kept < num_episodes:
    if attempt >= max_attempts:
      raise RuntimeError(f"dataset {task.name!r}, split {split!r}: the expert produced only {kept} "
                         f"episodes that keep_episode accepts in {attempt} attempts (needed {num_episodes})")
    s = episode_seed(seed, split, attempt)
    attempt += 1
    if policy == "expert":
      factory = task.make_expert
    else:
      factory = lambda env, s=s: random_policy(task.spec, s)
    try:
      episode = run_episode(task, env, factory, s)
    except EpisodeError as e:  # steps that disagree with each other: already names step and field
      raise EpisodeError(f"dataset {task.name!r}, split {split!r}, episode {attempt - 1} (env seed {s}), "
                         f"{e}") from None
    except Exception as e:  # the simulator, the expert or observation_fn: say which episode
      raise RuntimeError(f"dataset {task.name!r}, split {split!r}, episode {attempt - 1} (env seed {s}): "
                         f"the rollout failed: {type(e).__name__}: {e}") from e
    check_episode(episode, task, split, attempt - 1, s)
    if policy == "expert" and task.keep_episode is not None and not task.keep_episode(episode):
      stats.rejected += 1
      continue
    kept += 1
    stats.kept += 1
    stats.steps += len(episode["infos"])
    stats.returns.append(episode["episode_return"])
    progress.update(kept, f"{stats.rejected} rejected, {stats.steps} steps")
    yield s, episode
