"""Expert-normalised scores: per task with a confidence interval, per domain, and the paper's counts.

A task's score is (R - R_random) / (R_expert - R_random) with R the mean return of the agent's
episodes, R_expert and R_random the data's expert and random-policy mean returns (dataset metadata):
0 is the random policy, 1 the expert that made the data. The interval is a percentile bootstrap over
episodes (resampling episode returns with replacement), seeded, so a report is reproducible.
Aggregates: per domain and overall, the interquartile mean (IQM) of the task scores with a stratified
bootstrap interval (every task's episodes resampled, then the IQM over tasks: rliable's method with
episodes as runs). Atari tasks also report the human-normalised score (R - random) / (human - random)
with the published scores in gato_jax/envs/reference_scores.py (simulator-free: training imports it).
"""

import dataclasses
import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from gato_jax.envs.reference_scores import HUMAN_RANDOM

THRESHOLDS = (0.5, 0.8)  # the paper counts tasks above 50% and 80% of expert


def normalized_score(mean_return, expert_return: float, random_return: float, task: str = "?"):
  """(R - random) / (expert - random); works elementwise on arrays of returns."""
  expert_return, random_return = float(expert_return), float(random_return)
  if not (np.isfinite(expert_return) and np.isfinite(random_return)):
    raise ValueError(f"task {task!r}: expert_return={expert_return} and random_return={random_return} "
                     "must be finite (dataset metadata)")
  span = expert_return - random_return
  if span <= 0:
    raise ValueError(f"task {task!r}: expert_return={expert_return} is not above random_return="
                     f"{random_return}; the score (R - random) / (expert - random) is undefined")
  return (np.asarray(mean_return, np.float64) - random_return) / span


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, num_samples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `values`."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return (float("nan"), float("nan"))
  if values.size == 1 or num_samples <= 0:
    return (float(values.mean()), float(values.mean()))
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, values.size, (num_samples, values.size))].mean(axis=1)
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return (float(lo), float(hi))


def interquartile_mean(values: Iterable[float]) -> float:
  """Mean of the middle 50% (the IQM that JAT and rliable report), for aggregate scores."""
  v = np.sort(np.asarray(list(values), np.float64))
  if v.size == 0:
    return float("nan")
  lo, hi = int(np.floor(0.25 * v.size)), int(np.ceil(0.75 * v.size))
  return float(v[lo:max(hi, lo + 1)].mean())


def human_reference(task: str):
  """(random, human) published scores of an Atari task (atari_<game>, atari_<game>_<variant>), or None."""
  if not task.startswith("atari_"):
    return None
  for game, reference in HUMAN_RANDOM.items():
    if task == f"atari_{game}" or task.startswith(f"atari_{game}_"):
      return reference
  return None


def human_normalized_score(mean_return, task: str):
  """(R - random) / (human - random) with the published scores, or None for a task without them."""
  reference = human_reference(task)
  if reference is None:
    return None
  random_score, human_score = reference
  return (np.asarray(mean_return, np.float64) - random_score) / (human_score - random_score)


def iqm_interval(task_results: Iterable[Mapping], confidence: float = 0.95, num_samples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
  """Stratified bootstrap interval of the IQM of normalised scores: each sample resamples every task's
  episode returns with replacement and takes the IQM of the resulting task scores."""
  tasks = [r for r in task_results if r.get("returns")]
  if not tasks:
    return (float("nan"), float("nan"))
  rng = np.random.default_rng(seed)
  samples = np.empty((num_samples, len(tasks)))
  for j, r in enumerate(tasks):
    returns = np.asarray(r["returns"], np.float64)
    means = returns[rng.integers(0, returns.size, (num_samples, returns.size))].mean(axis=1)
    samples[:, j] = normalized_score(means, r["expert_return"], r["random_return"], r.get("task", "?"))
  iqms = np.array([interquartile_mean(row) for row in samples])
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(iqms, [alpha, 1.0 - alpha])
  return (float(lo), float(hi))


@dataclasses.dataclass
class TaskScore:
  """One task's online result; `to_dict` is what report.json holds per task."""
  task: str
  domain: str
  returns: list[float]
  lengths: list[int]
  expert_return: float
  random_return: float
  crashed: int = 0  # episodes whose simulator raised (counted as failures, see rollout.py)
  seeds: list[int] = dataclasses.field(default_factory=list)
  confidence: float = 0.95
  bootstrap_samples: int = 2000

  @property
  def episodes(self) -> int:
    return len(self.returns)

  @property
  def mean_return(self) -> float:
    return float(np.mean(self.returns)) if self.returns else float("nan")

  @property
  def normalized_score(self) -> float:
    return float(normalized_score(self.mean_return, self.expert_return, self.random_return, self.task))

  def interval(self) -> tuple[float, float]:
    lo, hi = bootstrap_interval(self.returns, self.confidence, self.bootstrap_samples,
                                seed=zlib.crc32(self.task.encode()))
    return (float(normalized_score(lo, self.expert_return, self.random_return, self.task)),
            float(normalized_score(hi, self.expert_return, self.random_return, self.task)))

  def to_dict(self) -> dict:
    lo, hi = self.interval()
    human = human_normalized_score(self.mean_return, self.task)
    extra = {} if human is None else {"human_normalized_score": float(human)}
    return extra | {
        "normalized_score": self.normalized_score,
        "score_ci_low": lo,
        "score_ci_high": hi,
        "confidence": self.confidence,
        "mean_return": self.mean_return,
        "std_return": float(np.std(self.returns)) if self.returns else float("nan"),
        "expert_return": float(self.expert_return),
        "random_return": float(self.random_return),
        "episodes": self.episodes,
        "crashed_episodes": int(self.crashed),
        "mean_length": float(np.mean(self.lengths)) if self.lengths else float("nan"),
        "domain": self.domain,
        "returns": [float(r) for r in self.returns],
        "seeds": [int(s) for s in self.seeds],
    }


def _aggregate(results: Sequence[Mapping], thresholds: Sequence[float], confidence: float,
               seed: int) -> dict:
  s = [r["normalized_score"] for r in results]
  lo, hi = iqm_interval(results, confidence, seed=seed)
  out = {"tasks": len(s), "mean_normalized_score": float(np.mean(s)) if s else float("nan"),
         "iqm_normalized_score": interquartile_mean(s), "iqm_ci_low": lo, "iqm_ci_high": hi,
         "tasks_above": {f"{t:g}": int(sum(x > t for x in s)) for t in thresholds}}
  human = [r["human_normalized_score"] for r in results if "human_normalized_score" in r]
  if human:
    out["iqm_human_normalized_score"] = interquartile_mean(human)
  return out


def summarize(task_results: Mapping[str, Mapping], thresholds: Sequence[float] = THRESHOLDS,
              confidence: float = 0.95, seed: int = 0) -> dict:
  """Per-domain and overall mean / IQM (with its stratified bootstrap interval) of the task scores,
  and the number of tasks above each threshold."""
  results = [dict(r, task=name) for name, r in task_results.items()]
  domains: dict[str, list[Mapping]] = {}
  for r in results:
    domains.setdefault(r["domain"], []).append(r)
  overall = _aggregate(results, thresholds, confidence, seed)
  summary = {"num_tasks": overall.pop("tasks")} | overall
  summary["domains"] = {d: _aggregate(rs, thresholds, confidence, seed) for d, rs in sorted(domains.items())}
  return summary
