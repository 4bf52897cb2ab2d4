"""The acting agent: Gato's deployment loop over a batch of episodes of one task, with a KV cache.

Per episode (docs/METHOD.md, "Acting and evaluation"): the context starts with a prompt (the last timesteps of a
successful demonstration of the task that fit in `prompt_tokens`); at each step the observation is
tokenized with the separator (`tokenize_observation`) and appended, then every action token is sampled
in turn from the logits restricted to the ids valid for that action dimension (`action_token_ranges`;
logits outside are -inf) and fed back, and the ids are detokenized (`action_from_tokens`).

Episodes of a batch advance in lockstep through one cache (the cache index is shared by the batch):
each step's observation chunks are left-padded with PAD to the longest one (PAD slots are written but
never attended), and finished episodes feed PAD chunks until the batch is done.

Rolling window of L = `context_length` tokens: before a step that would not fit, the cache is
re-prefilled with each episode's prompt (kept, as in training where a prompt precedes the window)
and its most recent whole timesteps that fit in `roll_keep * L` tokens. With the paper's
position_embedding="none" the re-prefilled cache equals the cache of that window exactly.

One jitted function runs a whole step on the device (the observation chunk, then every action token,
a `lax.scan` over the action dimensions); it compiles once per (batch, chunk length) shape. A step's
last action token is written into the cache at the head of the next step's chunk, not by a decode
call of its own. The `use_cache=False` mode re-encodes the whole window for every action token (the
baseline of bench/acting.py; same sampling, same window rule): with roll_keep=1 both modes see the
same tokens at every step (tests/test_evaluation_agent.py checks they act identically).
"""

import functools
from typing import Any, Mapping, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.episodes import TaskSpec
from gato_jax.tokenizers import (TokenKind, VocabLayout, action_from_tokens, action_token_ranges,
                                 tokenize_observation, tokenize_timestep)
from gato_jax.tokenizers import stream as stream_lib

PREFILL_BUCKET = 16  # prefill lengths are rounded up to this, so rolling compiles only a few shapes


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def token_features(tokens, kind: TokenKind, patch_size: int):
  """[B] ids -> one position of model features per row (no patch, local position 0)."""
  batch = tokens.shape[0]
  zeros = jnp.zeros((batch, 1), jnp.int32)
  return {"tokens": tokens[:, None].astype(jnp.int32), "kinds": zeros + int(kind), "obs_positions": zeros,
          "patches": jnp.zeros((batch, 1, patch_size, patch_size, 3), jnp.uint8),
          "patch_rows": jnp.zeros((batch, 1, 2), jnp.int32), "patch_cols": jnp.zeros((batch, 1, 2), jnp.int32)}


def sample_restricted(logits, lo, hi, rng, temperature, greedy: bool):
  """Samples ids in [lo, hi) from float logits [B, V] (argmax when greedy)."""
  ids = jnp.arange(logits.shape[-1])
  masked = jnp.where((ids >= lo) & (ids < hi), logits.astype(jnp.float32), -jnp.inf)
  if greedy:
    return jnp.argmax(masked, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, masked / jnp.maximum(temperature, 1e-6), axis=-1).astype(jnp.int32)


def _init_cache(graphdef, state, *, batch_size, max_length):
  return nnx.merge(graphdef, state).init_cache(batch_size, max_length)


def act_step(model, cache, chunk, ranges, rng, temperature, greedy: bool):
  """Chunk [B, S] into the cache, then the A action tokens one at a time: ([B, A] ids, cache).

  The chunk is the previous step's last action token (when it is not in the cache yet), the
  observation and the separator. This step's last action token is sampled but not written: it opens
  the next step's chunk, which saves one decode call per step (half of them for 1-token actions).
  """
  logits, cache = model.decode(chunk, cache, last_only=True)

  def one_token(carry, xs):
    logits, cache, finite = carry
    (lo, hi), key = xs
    token = sample_restricted(logits[:, -1], lo, hi, key, temperature, greedy)
    finite &= jnp.isfinite(logits).all()
    logits, cache = model.decode(token_features(token, TokenKind.ACTION, model.options.patch_size), cache,
                                 last_only=True)
    return (logits, cache, finite), token

  keys = jax.random.split(rng, ranges.shape[0])
  (logits, cache, finite), tokens = jax.lax.scan(one_token, (logits, cache, jnp.bool_(True)),
                                                 ((ranges[:-1, 0], ranges[:-1, 1]), keys[:-1]))
  last = sample_restricted(logits[:, -1], ranges[-1, 0], ranges[-1, 1], keys[-1], temperature, greedy)
  finite &= jnp.isfinite(logits).all()
  return jnp.concatenate([tokens.T, last[:, None]], axis=1), cache, finite


def _act_cached(graphdef, state, cache, chunk, ranges, rng, temperature, *, greedy):
  return act_step(nnx.merge(graphdef, state), cache, chunk, ranges, rng, temperature, greedy)


def _prefill_and_act(graphdef, state, context, chunk, ranges, rng, temperature, *, max_length, greedy):
  """A fresh cache of `max_length` slots filled with `context` [B, C], then a step: one dispatch."""
  model = nnx.merge(graphdef, state)
  _, cache = model.prefill(context, max_length=max_length, last_only=True)
  return act_step(model, cache, chunk, ranges, rng, temperature, greedy)


def _act_uncached(graphdef, state, window, lengths, ranges, rng, temperature, *, greedy):
  """The baseline: a full causal pass over the right-padded window [B, L] for every action token."""
  model = nnx.merge(graphdef, state)
  rows = jnp.arange(window["tokens"].shape[0])

  def one_token(carry, xs):
    window, lengths, finite = carry
    (lo, hi), key = xs
    logits = model(window)[rows, lengths - 1]
    token = sample_restricted(logits, lo, hi, key, temperature, greedy)
    window = dict(window)
    window["tokens"] = window["tokens"].at[rows, lengths].set(token)
    window["kinds"] = window["kinds"].at[rows, lengths].set(int(TokenKind.ACTION))
    return (window, lengths + 1, finite & jnp.isfinite(logits).all()), token

  keys = jax.random.split(rng, ranges.shape[0])
  (_, _, finite), tokens = jax.lax.scan(one_token, (window, lengths, jnp.bool_(True)),
                                        ((ranges[:, 0], ranges[:, 1]), keys))
  return tokens.T, finite


class GatoAgent:
  """Acts in `num_envs` episodes of one task at once; see the module docstring.

  Usage:
    agent = GatoAgent(model, layout, spec, text_tokenizer, context_length=1024)
    agent.reset(prompts=[agent.prompt_from_episode(demo) for demo in demos])  # or [None] * B
    actions = agent.act([obs_0, obs_1, None, ...])   # None: that episode is over; its action is None
  """

  def __init__(self, model, layout: VocabLayout, spec: TaskSpec, text_tokenizer=None, *,
               context_length: int, greedy: bool = False, temperature: float = 1.0, seed: int = 0,
               prompt_tokens: Optional[int] = None, roll_keep: float = 0.75, use_cache: bool = True):
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
    self._obs_kwargs = {"max_obs_positions": options.max_obs_positions,
                        "num_patch_positions": options.num_patch_positions}
    self.num_actions = spec.action.size
    self._max_image_tokens = int(getattr(options, "max_image_tokens", -1))
    self._ranges = np.asarray(action_token_ranges(spec.action, layout), np.int32).reshape(-1, 2)
    self._rng = jax.random.key(seed)
    graphdef, self._state = nnx.split(model)
    self._prefill_and_act = jax.jit(functools.partial(_prefill_and_act, graphdef),
                                    static_argnames=("max_length", "greedy"))
    self._init_cache = jax.jit(functools.partial(_init_cache, graphdef),
                               static_argnames=("batch_size", "max_length"))
    self._act_cached = jax.jit(functools.partial(_act_cached, graphdef), static_argnames=("greedy",),
                               donate_argnames=("cache",))
    self._act_uncached = jax.jit(functools.partial(_act_uncached, graphdef), static_argnames=("greedy",))
    self._prompts: list[list[dict]] = []
    self._steps: list[list[dict]] = []
    self._cache = None
    self._cache_len = 0  # positions written since the last prefill (host-side copy of cache.index)
    self._pending: list[Optional[dict]] = []  # per episode: its last action token, not in the cache yet
    self.rolls = 0

  # ----------------------------------------------------------------------------------------------
  # Prompts.
  # ----------------------------------------------------------------------------------------------

  def timestep_stream(self, episode: Mapping[str, Any], t: int) -> dict:
    """Step t of an episode (stacked steps, as datasets.ControlDataset gives) as a token stream."""
    steps = episode["steps"]

    def at(tree):
      return {k: at(v) if isinstance(v, Mapping) else v[t] for k, v in tree.items()}

    return tokenize_timestep(at(steps["observation"]), np.asarray(steps["action"])[t], self.spec, self.layout,
                             self.text_tokenizer, **self._obs_kwargs)

  def prompt_from_episode(self, episode: Mapping[str, Any]) -> list[dict]:
    """The last whole timesteps of `episode` whose tokens fit in `prompt_tokens` (none if even its last
    step does not): the goal-conditioning prompt, as training's end-of-episode prompts."""
    chosen, total = [], 0
    for t in reversed(range(len(np.asarray(episode["steps"]["reward"])))):
      stream = self.timestep_stream(episode, t)
      if total + len(stream["tokens"]) > self.prompt_tokens:
        break
      chosen.append(stream)
      total += len(stream["tokens"])
    return chosen[::-1]

  # ----------------------------------------------------------------------------------------------
  # Acting.
  # ----------------------------------------------------------------------------------------------

  def reset(self, prompts: Sequence[Optional[Sequence[dict]]]) -> None:
    """Starts len(prompts) episodes; each prompt is a list of timestep streams (or None / [])."""
    self._prompts = [list(p or []) for p in prompts]
    self._steps = [[] for _ in prompts]
    self._pending = [None for _ in prompts]
    self._cache, self._cache_len = None, 0

  @property
  def num_envs(self) -> int:
    return len(self._steps)

  def _context(self, row: int, budget: int) -> Optional[dict]:
    """Row's prompt, then its most recent whole steps, within `budget` tokens (a prompt longer than the
    budget, which prompt_tokens <= roll_keep * L avoids, keeps only its last steps)."""
    prompt = _latest(self._prompts[row], budget)
    steps = _latest(self._steps[row], budget - sum(len(s["tokens"]) for s in prompt))
    parts = prompt + steps
    return stream_lib.concat(parts) if parts else None

  def _next_key(self):
    self._rng, key = jax.random.split(self._rng)
    return key

  def act(self, observations: Sequence[Optional[Mapping[str, Any]]]) -> list:
    """One action per episode (None where the observation is None: that episode has ended)."""
    if len(observations) != self.num_envs:
      raise ValueError(f"act() got {len(observations)} observations for {self.num_envs} episodes; "
                       "call reset(prompts) with one prompt per episode first")
    streams = [None if o is None else tokenize_observation(o, self.spec, self.layout, self.text_tokenizer,
                                                           **self._obs_kwargs)
               for o in observations]
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
      step = stream_lib.concat([stream, stream_lib.of_ids(ids, TokenKind.ACTION)])
      self._steps[row].append(step)
      actions.append(action_from_tokens(ids, self.spec.action, self.layout))
    return actions

  def _act_with_cache(self, streams, ranges, temperature):
    _, need = self._chunk_need(streams)
    context = None
    if self._cache is None or self._cache_len + need > self.context_length:
      context = self._roll(need)  # clears the pending action tokens: the history holds them
    chunks = [None if s is None else stream_lib.concat([p, s]) if p is not None else s
              for s, p in zip(streams, self._pending)]
    chunk_len, need = self._chunk_need(streams)
    chunk, key = stream_lib.pad(chunks, chunk_len, left=True), self._next_key()
    self._check_images(chunk, context)
    if context is not None:
      tokens, self._cache, finite = self._prefill_and_act(self._state, context, chunk, ranges, key, temperature,
                                                          max_length=self.context_length, greedy=self.greedy)
    else:
      tokens, self._cache, finite = self._act_cached(self._state, self._cache, chunk, ranges, key, temperature,
                                                     greedy=self.greedy)
    self._cache_len += need
    self._check_finite(finite)
    tokens = np.asarray(tokens)
    self._pending = [None if s is None else stream_lib.of_ids(tokens[row, -1:], TokenKind.ACTION) for row, s in enumerate(streams)]
    return tokens

  def _chunk_need(self, streams) -> tuple[int, int]:
    """(chunk length, slots this step writes): pending action + observation, then A - 1 actions."""
    chunk_len = max((0 if p is None else 1) + len(s["tokens"])
                    for s, p in zip(streams, self._pending) if s is not None)
    return chunk_len, chunk_len + self.num_actions - 1

  def _roll(self, need: int) -> Optional[dict]:
    """Starts a fresh cache: returns the [B, C] chunk to prefill it with (each episode's prompt and its
    latest steps, left-padded), or None when there is nothing yet (the cache is then made empty)."""
    budget = min(self.context_length - need, max(int(self.roll_keep * self.context_length), 0))
    contexts = [self._context(row, budget) for row in range(self.num_envs)]
    self._pending = [None] * self.num_envs
    longest = max([0] + [len(c["tokens"]) for c in contexts if c is not None])
    if longest == 0:  # no prompt and no step yet
      self._cache = self._init_cache(self._state, batch_size=self.num_envs, max_length=self.context_length)
      self._cache_len = 0
      return None
    length = min(_round_up(longest, PREFILL_BUCKET), budget)
    self._cache, self._cache_len = None, length
    if any(self._steps):
      self.rolls += 1
    return stream_lib.pad(contexts, length, left=True)

  def _act_without_cache(self, streams, need, ranges, temperature):
    budget = self.context_length - need
    windows, lengths = [], []
    for row, stream in enumerate(streams):
      context = self._context(row, budget) if stream is not None else None
      parts = [p for p in (context, stream) if p is not None]
      window = stream_lib.concat(parts) if parts else None
      windows.append(window)
      lengths.append(0 if window is None else len(window["tokens"]))
    lengths = np.maximum(np.asarray(lengths, np.int32), 1)
    window = stream_lib.pad(windows, self.context_length, left=False)
    self._check_images(window)
    tokens, finite = self._act_uncached(self._state, window, jnp.asarray(lengths), ranges, self._next_key(),
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


def _latest(steps: Sequence[dict], budget: int) -> list[dict]:
  """The longest run of the last whole steps whose tokens fit in `budget`."""
  chosen, total = [], 0
  for s in reversed(steps):
    total += len(s["tokens"])
    if total > budget:
      break
    chosen.append(s)
  return chosen[::-1]


class GatoActor:
  """The rollout interface (rollout.Actor) over a GatoAgent: each episode gets a demonstration prompt.

  The prompt of the episode with env seed s is demonstration `s mod len(demonstrations)` (after a
  seeded shuffle), so a report is reproducible and episodes see different demonstrations.
  """

  def __init__(self, agent: GatoAgent, demonstrations: Optional[Sequence[Mapping[str, Any]]] = None,
               seed: int = 0):
    self.agent = agent
    prompts = [agent.prompt_from_episode(d) for d in (demonstrations or [])]
    order = np.random.default_rng(seed).permutation(len(prompts))
    self._prompts = [prompts[i] for i in order]

  def begin(self, seeds: Sequence[int]) -> None:
    if self._prompts:
      self.agent.reset([self._prompts[s % len(self._prompts)] for s in seeds])
    else:
      self.agent.reset([None] * len(seeds))

  def act(self, observations, raw_observations=None, envs=None) -> list:
    del raw_observations, envs
    return self.agent.act(observations)
