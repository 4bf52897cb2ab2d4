"""An episode's token history for acting: observations and timesteps as token streams, the
demonstration prompt, and the window a rolled cache is refilled with (prompt, then the latest steps).
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from gato_jax.episodes import TaskSpec
from gato_jax.tokenizers import TokenKind, VocabLayout, tokenize_observation, tokenize_timestep
from gato_jax.tokenizers import stream as stream_lib


@dataclasses.dataclass
class StepTokenizer:
  """Tokenizes one task's observations and timesteps for a model (its observation limits)."""
  spec: TaskSpec
  layout: VocabLayout
  text_tokenizer: Any = None
  max_obs_positions: int = 512
  num_patch_positions: int = 128

  @classmethod
  def for_model(cls, options, layout: VocabLayout, spec: TaskSpec, text_tokenizer=None) -> "StepTokenizer":
    return cls(spec, layout, text_tokenizer, options.max_obs_positions, options.num_patch_positions)

  @property
  def _limits(self) -> dict:
    return {"max_obs_positions": self.max_obs_positions, "num_patch_positions": self.num_patch_positions}

  def observation(self, observation: Mapping[str, Any]) -> dict:
    return tokenize_observation(observation, self.spec, self.layout, self.text_tokenizer, **self._limits)

  def timestep(self, episode: Mapping[str, Any], t: int) -> dict:
    """Step t of an episode (stacked steps, as datasets.ControlDataset gives) as a token stream."""
    steps = episode["steps"]

    def at(tree):
      return {k: at(v) if isinstance(v, Mapping) else v[t] for k, v in tree.items()}

    return tokenize_timestep(at(steps["observation"]), np.asarray(steps["action"])[t], self.spec, self.layout,
                             self.text_tokenizer, **self._limits)

  def prompt(self, episode: Mapping[str, Any], prompt_tokens: int) -> list[dict]:
    """The last whole timesteps of `episode` whose tokens fit in `prompt_tokens` (none if even its last
    step does not): the goal-conditioning prompt, as training's end-of-episode prompts."""
    chosen, total = [], 0
    for t in reversed(range(len(np.asarray(episode["steps"]["reward"])))):
      stream = self.timestep(episode, t)
      if total + len(stream["tokens"]) > prompt_tokens:
        break
      chosen.append(stream)
      total += len(stream["tokens"])
    return chosen[::-1]


class History:
  """One episode's tokens: its prompt, its steps so far, and its last action token when that token is
  not in the cache yet (a step's last action token opens the next step's chunk)."""

  def __init__(self, prompt: Optional[Sequence[dict]] = None):
    self.prompt = list(prompt or [])
    self.steps: list[dict] = []
    self.pending: Optional[dict] = None

  def context(self, budget: int, prompt_slots: int = 0) -> Optional[dict]:
    """The prompt, then the most recent whole steps, within `budget` tokens (a prompt longer than the
    budget, which prompt_tokens <= roll_keep * L avoids, keeps only its last steps). With
    `prompt_slots`, the prompt counts as that many tokens (a batch's prompts kept in a shared prefix
    of the cache: the steps fit in what is left after it)."""
    prompt = latest(self.prompt, prompt_slots or budget)
    used = max(prompt_slots, sum(len(s["tokens"]) for s in prompt))
    steps = latest(self.steps, budget - used)
    parts = prompt + steps
    return stream_lib.concat(parts) if parts else None

  def chunk(self, observation: dict) -> dict:
    """The stream the next cached step feeds: the pending action token, then the observation."""
    return observation if self.pending is None else stream_lib.concat([self.pending, observation])

  def record(self, observation: dict, ids, cached: bool) -> None:
    """Appends a step; with `cached`, its last action token is pending (not in the cache yet)."""
    self.steps.append(stream_lib.concat([observation, stream_lib.of_ids(ids, TokenKind.ACTION)]))
    self.pending = stream_lib.of_ids(ids[-1:], TokenKind.ACTION) if cached else None


def latest(steps: Sequence[dict], budget: int) -> list[dict]:
  """The longest run of the last whole steps whose tokens fit in `budget`."""
  chosen, total = [], 0
  for s in reversed(steps):
    total += len(s["tokens"])
    if total > budget:
      break
    chosen.append(s)
  return chosen[::-1]
