"""The batched acting agent: Gato's deployment loop over a batch of episodes of one task, with a KV cache.

Per episode (docs/METHOD.md, "Acting and evaluation"): the context starts with a prompt (the last timesteps of a
successful demonstration of the task that fit in `prompt_tokens`); at each step the observation is
tokenized with the separator (`tokenize_observation`) and appended, then every action token is sampled
in turn from the logits restricted to the ids valid for that action dimension (`action_token_ranges`;
logits outside are -inf) and fed back, and the ids are detokenized (`action_from_tokens`).

Episodes of a batch advance in lockstep through one cache (the cache index is shared by the batch):
each step's observation chunks are left-padded with PAD to the longest one (PAD slots are written but
never attended), and finished episodes feed PAD chunks until the batch is done.

Rolling window of L = `context_length` tokens: before a step that would not fit, the window starts
again with each episode's prompt (kept, as in training where a prompt precedes the window) and its
most recent whole timesteps that fit in `roll_keep * L` tokens. With the paper's
position_embedding="none" a token's keys and values do not depend on its slot, so the prompts stay
in the cache's first slots (the batch's longest prompt, rounded up) and only the steps after them
are recomputed; with a learned position table the whole window is re-prefilled.

The device work is acting/decode.py's (one jitted call per step); the tokens of each episode are
acting/prompts.py's `History`. The `use_cache=False` mode re-encodes the whole window for every action
token (the baseline of bench/acting.py; same sampling, same window rule): with roll_keep=1 both modes
see the same tokens at every step (tests/test_evaluation_agent.py checks they act identically).
"""

import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.acting import decode
from gato_jax.acting.prompts import History, StepTokenizer, latest
from gato_jax.episodes import TaskSpec
from gato_jax.tokenizers import TokenKind, VocabLayout, action_from_tokens, action_token_ranges
from gato_jax.tokenizers import stream as stream_lib

class GatoAgent:
  """Acts in `num_envs` episodes of one task at once; see the module docstring.

  Usage:
    agent = GatoAgent(model, layout, spec, text_tokenizer, context_length=1024)
    agent.reset(prompts=[agent.prompt_from_episode(demo) for demo in demos])  # or [None] * B
    actions = agent.act([obs_0, obs_1, None, ...])   # None: that episode is over; its action is None
  """

  def __init__(self, model, layout: VocabLayout, spec: TaskSpec, text_tokenizer=None, *,
               context_length: int, greedy: bool = False, temperature: float = 1.0, seed: int = 0,
               prompt_tokens: Optional[int] = None, roll_keep: float = 0.75, use_cache: bool = True,
               chunk_dtype: Optional[str] = None):
    options = model.options
    if context_length < 2:
      raise ValueError(f"context_length must be at least 2, got {context_length}")
    if options.position_embedding == "learned" and context_length > options.max_length:
      raise ValueError(f"context_length={context_length} exceeds config.model.max_length="
                       f"{options.max_length} (learned position table)")
    if not greedy and temperature <= 0:
      raise ValueError(f"temperature must be > 0 when sampling, got {temperature} (or use greedy)")
    self.layout, self.spec, self.text_tokenizer = layout, spec, text_tokenizer
    self.context_length = int(context_length)
    self.greedy, self.temperature = bool(greedy), float(temperature)
    self.prompt_tokens = int(prompt_tokens if prompt_tokens is not None else context_length // 2)
    self.roll_keep = float(roll_keep)
    self.use_cache = bool(use_cache)
    self.tokenizer = StepTokenizer.for_model(options, layout, spec, text_tokenizer)
    self.num_actions = spec.action.size
    self._max_image_tokens = int(getattr(options, "max_image_tokens", -1))
    self._ranges = np.asarray(action_token_ranges(spec.action, layout), np.int32).reshape(-1, 2)
    self._rng = jax.random.key(seed)
    # chunk_dtype: calls of more than one position (chunks, prefills, a batch's action tokens)
    # multiply in this narrower dtype (decode.Weights).
    graphdef, self._params = decode.split(model, chunk_dtype)
    vocab = decode.vocab_window(self._ranges)  # the only logits acting samples from
    images = decode.has_images(spec)
    self._prefill_and_act = jax.jit(functools.partial(decode.prefill_and_act, graphdef, vocab=vocab, images=images),
                                    static_argnames=("max_length", "greedy"))
    self._init_cache = jax.jit(functools.partial(decode.init_cache, graphdef),
                               static_argnames=("batch_size", "max_length"))
    self._act_cached = jax.jit(functools.partial(decode.act_cached, graphdef, vocab=vocab, images=images),
                               static_argnames=("greedy",),
                               donate_argnames=("cache",))
    self._act_uncached = jax.jit(functools.partial(decode.act_uncached, graphdef), static_argnames=("greedy",))
    self._extend = jax.jit(functools.partial(decode.extend, graphdef, images=images), donate_argnames=("cache",))
    # Without a global position embedding a token's keys and values do not depend on its slot, so the
    # prompt stays in slots [0, prompt_tokens) across rolls and only the latest steps are recomputed
    # (gato-serve does the same per session).
    self._keeps_prompt = options.position_embedding == "none"
    self._prompt_slots = 0  # the batch's longest prompt, rounded up: the prefix the prompts are kept in
    self._prefix = 0  # slots [0, prefix) of the cache hold the batch's prompts (0: not kept yet)
    self._histories: list[History] = []
    self._cache = None
    self._cache_len = 0  # positions written since the last prefill (host-side copy of cache.index)
    self.rolls = 0

  def timestep_stream(self, episode: Mapping[str, Any], t: int) -> dict:
    return self.tokenizer.timestep(episode, t)

  def prompt_from_episode(self, episode: Mapping[str, Any]) -> list[dict]:
    """The end of `episode` that fits in `prompt_tokens` (StepTokenizer.prompt)."""
    return self.tokenizer.prompt(episode, self.prompt_tokens)

  # ----------------------------------------------------------------------------------------------
  # Acting.
  # ----------------------------------------------------------------------------------------------

  def reset(self, prompts: Sequence[Optional[Sequence[dict]]]) -> None:
    """Starts len(prompts) episodes; each prompt is a list of timestep streams (or None / [])."""
    self._histories = [History(p) for p in prompts]
    self._cache, self._cache_len, self._prefix = None, 0, 0
    longest = max([0] + [sum(len(s["tokens"]) for s in h.prompt) for h in self._histories])
    self._prompt_slots = (min(decode.round_up(longest, decode.PREFILL_BUCKET), self.prompt_tokens)
                          if self._keeps_prompt and longest else 0)

  def _prompt_slots_within(self, budget: int) -> int:
    """The prompts' prefix when it is kept within a window of `budget` tokens, else 0."""
    return self._prompt_slots if self._prompt_slots < budget else 0

  @property
  def num_envs(self) -> int:
    return len(self._histories)

  @property
  def histories(self) -> list[History]:
    """Each episode's tokens so far (prompt, steps)."""
    return self._histories

  @property
  def _steps(self) -> list[list[dict]]:
    return [h.steps for h in self._histories]

  def _next_key(self):
    self._rng, key = jax.random.split(self._rng)
    return key

  def act(self, observations: Sequence[Optional[Mapping[str, Any]]]) -> list:
    """One action per episode (None where the observation is None: that episode has ended)."""
    if len(observations) != self.num_envs:
      raise ValueError(f"act() got {len(observations)} observations for {self.num_envs} episodes; "
                       "call reset(prompts) with one prompt per episode first")
    streams = [None if o is None else self.tokenizer.observation(o) for o in observations]
    active = [s is not None for s in streams]
    if not any(active):
      return [None] * self.num_envs
    chunk_len = max(len(s["tokens"]) for s in streams if s is not None)
    need = chunk_len + self.num_actions
    if need > self.context_length:
      raise ValueError(f"task {self.spec.name!r}: one timestep is {need} tokens, more than the agent's "
                       f"context of {self.context_length}")
    ranges = jnp.asarray(self._ranges)
    temperature = jnp.float32(self.temperature)
    if self.use_cache:
      tokens = self._act_with_cache(streams, ranges, temperature)
    else:
      tokens = self._act_without_cache(streams, need, ranges, temperature)
    tokens = np.asarray(tokens)
    actions = []
    for row, stream in enumerate(streams):
      if stream is None:
        actions.append(None)
        continue
      ids = tokens[row]
      self._histories[row].record(stream, ids, cached=self.use_cache)
      actions.append(action_from_tokens(ids, self.spec.action, self.layout))
    return actions

  def _act_with_cache(self, streams, ranges, temperature):
    _, need = self._chunk_need(streams)
    context = None
    if self._cache is None or self._cache_len + need > self.context_length:
      context = self._roll(need)  # clears the pending action tokens: the history holds them
    chunks = [None if s is None else h.chunk(s) for s, h in zip(streams, self._histories)]
    chunk_len, need = self._chunk_need(streams)
    chunk, key = stream_lib.pad(chunks, chunk_len, left=True), self._next_key()
    self._check_images(chunk, context)
    if context is not None:
      tokens, self._cache, finite = self._prefill_and_act(self._params, context, chunk, ranges, key, temperature,
                                                          max_length=self.context_length, greedy=self.greedy)
    else:
      tokens, self._cache, finite = self._act_cached(self._params, self._cache, chunk, ranges, key, temperature,
                                                     greedy=self.greedy)
    self._cache_len += need
    self._check_finite(finite)
    return tokens

  def _chunk_need(self, streams) -> tuple[int, int]:
    """(chunk length, slots this step writes): pending action + observation, then A - 1 actions."""
    chunk_len = max((0 if h.pending is None else 1) + len(s["tokens"])
                    for s, h in zip(streams, self._histories) if s is not None)
    return chunk_len, chunk_len + self.num_actions - 1

  def _roll(self, need: int) -> Optional[dict]:
    """Starts the window again: returns the [B, C] chunk to prefill a fresh cache with (each episode's
    prompt and its latest steps, left-padded), or None when the cache is ready (nothing yet: made
    empty; a kept prompt: the latest steps recomputed after it)."""
    budget = min(self.context_length - need, max(int(self.roll_keep * self.context_length), 0))
    for h in self._histories:
      h.pending = None
    slots = self._prompt_slots_within(budget)
    if slots and self._prefix:  # the prompts stay in [0, prefix); the latest steps after them
      steps = [latest(h.steps, budget - self._prefix) for h in self._histories]
      longest = max(sum(len(s["tokens"]) for s in row) for row in steps)
      self.rolls += 1
      if not longest:  # no whole step fits after the prompts: the window restarts right after them
        self._cache, self._cache_len = self._cache.replace(index=jnp.int32(self._prefix)), self._prefix
        return None
      length = min(decode.round_up(longest, decode.PREFILL_BUCKET), budget - self._prefix)
      context = stream_lib.pad([stream_lib.concat(s) if s else None for s in steps], length, left=True)
      self._cache = self._extend(self._params, self._cache, jnp.int32(self._prefix), context)
      self._cache_len = self._prefix + length
      return None
    if slots and not any(h.steps):  # the first fill: the prompts
      self._prefix = self._cache_len = slots
      self._cache = None
      prompts = [latest(h.prompt, slots) for h in self._histories]
      return stream_lib.pad([stream_lib.concat(p) if p else None for p in prompts], slots, left=True)
    contexts = [h.context(budget, slots) for h in self._histories]
    longest = max([0] + [len(c["tokens"]) for c in contexts if c is not None])
    if longest == 0:  # no prompt and no step yet
      self._cache = self._init_cache(self._params, batch_size=self.num_envs, max_length=self.context_length)
      self._cache_len = 0
      return None
    length = min(decode.round_up(longest, decode.PREFILL_BUCKET), budget)
    self._cache, self._cache_len = None, length
    if any(self._steps):
      self.rolls += 1
    return stream_lib.pad(contexts, length, left=True)

  def _act_without_cache(self, streams, need, ranges, temperature):
    budget = self.context_length - need
    slots = self._prompt_slots_within(budget)
    windows, lengths = [], []
    for row, stream in enumerate(streams):
      context = self._histories[row].context(budget, slots) if stream is not None else None
      parts = [p for p in (context, stream) if p is not None]
      window = stream_lib.concat(parts) if parts else None
      windows.append(window)
      lengths.append(0 if window is None else len(window["tokens"]))
    lengths = np.maximum(np.asarray(lengths, np.int32), 1)
    window = stream_lib.pad(windows, self.context_length, left=False)
    self._check_images(window)
    tokens, finite = self._act_uncached(self._params, window, jnp.asarray(lengths), ranges, self._next_key(),
                                        temperature, greedy=self.greedy)
    self._check_finite(finite)
    return tokens

  def _check_images(self, *chunks) -> None:
    """Refuses chunks with more image tokens than the model encodes (config.model.max_image_tokens)."""
    limit = self._max_image_tokens
    if limit < 0:
      return
    most = max(int((c["kinds"] == TokenKind.IMAGE).sum(axis=1).max()) for c in chunks if c is not None)
    if most > limit:
      raise ValueError(f"task {self.spec.name!r}: the agent feeds {most} image tokens at once but "
                       f"config.model.max_image_tokens={limit} (the model leaves the others unencoded); "
                       f"evaluate with max_image_tokens >= {most} or -1 (it does not change the params)")

  def _check_finite(self, finite) -> None:
    if not bool(finite):
      raise FloatingPointError(f"task {self.spec.name!r}: the model produced non-finite logits while acting "
                               f"(a NaN / inf in the params, or a window past the cache's "
                               f"{self.context_length} slots)")


class GatoActor:
  """The rollout interface (rollout.Actor) over a GatoAgent: each episode gets a demonstration prompt.

  The prompt of the episode with env seed s is demonstration `s mod len(demonstrations)` (after a
  seeded shuffle), so a report is reproducible and episodes see different demonstrations.
  """

  def __init__(self, agent: GatoAgent, demonstrations: Optional[Sequence[Mapping[str, Any]]] = None,
               seed: int = 0):
    self.agent = agent
    self._prompts = [agent.prompt_from_episode(d) for d in shuffled(demonstrations or [], seed)]

  def begin(self, seeds: Sequence[int]) -> None:
    self.agent.reset([prompt_for(self._prompts, s) for s in seeds])

  def act(self, observations, raw_observations=None, envs=None) -> list:
    del raw_observations, envs
    return self.agent.act(observations)


def shuffled(demonstrations: Sequence[Any], seed: int) -> list:
  """The demonstrations in the seeded order episodes draw their prompts from (`prompt_for`)."""
  order = np.random.default_rng(seed).permutation(len(demonstrations))
  return [demonstrations[i] for i in order]


def prompt_for(prompts: Sequence[Any], episode_seed: int):
  """The prompt of the episode with env seed `episode_seed`: prompt `seed mod n` (None without any)."""
  return prompts[episode_seed % len(prompts)] if prompts else None
