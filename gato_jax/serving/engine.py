"""The policy server's engine: sessions, each with its own KV-cache slot, and one background loop that
gathers the pending act requests of all sessions into one batched decode call per task.

Sessions come and go at any time: slot s of the pool (acting/decode.py) is session s's batch-1 cache
with its own index, so a call steps whichever sessions have an observation waiting, whatever step
each is at. Per session, the window rule is GatoAgent's (acting/agent.py): before a step that would
not fit, its slot is re-prefilled with its prompt and latest whole steps within roll_keep * L. Each
session samples with its own key (its seed folded with its step), so its actions do not depend on
which sessions share a call.

Batching: the loop wakes on the first queued step and then waits up to `batch_wait_s` for the other
open sessions' steps (it stops waiting as soon as every open, idle session has one queued), so
sessions stepping in lockstep share a call instead of the first arrival always going alone.
Compiled shapes: rows are rounded up to a power of two, and every re-prefill fills a slot to the same
length (the whole roll budget, left-padded), so `warm` compiles every shape a task will need. A
re-prefill call takes at most PREFILL_POSITIONS positions (sessions that roll together beyond that go
in several calls): its attention scores grow with rows x length x L.
"""

import concurrent.futures
import dataclasses
import functools
import itertools
import secrets
import threading
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.acting import decode
from gato_jax.acting import prompts as prompts_lib
from gato_jax.acting.prompts import History, StepTokenizer
from gato_jax.tokenizers import action_from_tokens, action_token_ranges
from gato_jax.tokenizers import stream as stream_lib


class RequestError(ValueError):
  """A request the engine refuses; `status` is its HTTP status, the message one line."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass
class Session:
  id: str
  tokenizer: StepTokenizer
  history: History
  slot: int
  seed: int
  ranges: np.ndarray  # [A, 2] valid id range per action dimension
  cache_len: int  # positions written into the slot since its last prefill; > L forces a prefill
  last_used: float
  steps: int = 0
  busy: bool = False  # an act request is in flight (one at a time per session)
  closed: bool = False  # closed while busy: its slot is freed when the request is done
  prefix: int = -1  # slots [0, prefix) of its cache hold its prompt, kept across rolls (-1: not there)

  @property
  def task(self) -> str:
    return self.tokenizer.spec.name


@dataclasses.dataclass
class _Request:
  session: Session
  observation: dict  # its token stream
  future: concurrent.futures.Future


# Positions one re-prefill call fills at most (rows x context length): its attention scores are rows x
# length x heads x L floats, and 64 gato_79m sessions rolling together (512 positions each) compiled to
# 9.7 GB of temporaries, which took a 64-session server past 24 GB. 4096 positions still make M large.
PREFILL_POSITIONS = 4096


def _prefill_rows(length: int) -> int:
  """Rows per re-prefill call of `length` positions at most: the largest power of two within
  PREFILL_POSITIONS, at least 2 (_bucket's smallest)."""
  rows = 2
  while 2 * rows * length <= PREFILL_POSITIONS:
    rows *= 2
  return rows


def _bucket(n: int) -> int:
  """Rows per call rounded up to a power of two, at least 2: a handful of compiled shapes for any load.
  (With one row XLA:CPU turned the pool's gather / scatter into slices that copied the whole pool:
  a tiny-model step took 20 ms alone and 5 ms as one of 16.)"""
  return 1 << max(1, (n - 1).bit_length())


class Engine:
  """Sessions over one model; `submit` queues a step, the loop thread runs it (see the module docstring)."""

  def __init__(self, model, layout, *, max_sessions: int, context_length: int, prompt_tokens: int,
               greedy: bool, temperature: float, roll_keep: float = 0.75, batch_wait_s: float = 0.002,
               tokenizer_for: Callable[[str], StepTokenizer], on_batch: Optional[Callable[[int, float], None]] = None,
               chunk_dtype: Optional[str] = None):
    self.layout = layout
    self.max_sessions = int(max_sessions)
    self.context_length, self.prompt_tokens = int(context_length), int(prompt_tokens)
    self.greedy, self.temperature, self.roll_keep = bool(greedy), float(temperature), float(roll_keep)
    self.batch_wait_s = float(batch_wait_s)
    self.tokenizer_for = tokenizer_for  # task name -> StepTokenizer, RequestError when unknown
    self.on_batch = on_batch  # (rows, seconds) after each call: the server's metrics
    graphdef, self._params = decode.split(model, chunk_dtype)  # chunk_dtype: see decode.Weights
    self._act = jax.jit(functools.partial(decode.pool_act, graphdef), static_argnames=("greedy", "vocab", "images"),
                        donate_argnames=("pool",))
    self._extend = jax.jit(functools.partial(decode.pool_extend, graphdef), static_argnames=("images",),
                           donate_argnames=("pool",))
    # A prompt stays in its slot across window rolls, and only the kept steps are recomputed after
    # it: exact when positions are not embedded (position_embedding "none": a slot's attention does
    # not depend on where it sits), and it saves recomputing prompt_tokens positions per roll.
    self.keeps_prompt = model.options.position_embedding == "none"
    self._clear = jax.jit(decode.pool_clear, donate_argnames=("pool",))
    # One slot more than sessions: padding rows of a call read and write it, no session owns it.
    self._pool = jax.jit(functools.partial(decode.init_pool, graphdef), static_argnames=("slots", "max_length"))(
        self._params, slots=self.max_sessions + 1, max_length=self.context_length)
    self._scratch = self.max_sessions
    self.sessions: dict[str, Session] = {}
    self._free = list(range(self.max_sessions))
    self._queue: list[_Request] = []
    self._lock = threading.Condition()
    self._stopping = False
    self._seeds = itertools.count()
    self._thread = threading.Thread(target=self._loop, name="gato-serve-batcher", daemon=True)
    self._thread.start()

  # ----------------------------------------------------------------------------------------------
  # Sessions (any thread).
  # ----------------------------------------------------------------------------------------------

  def create(self, task: str, prompt: Optional[dict] = None, seed: Optional[int] = None) -> Session:
    tokenizer = self.tokenizer_for(task)
    prompt_streams = tokenizer.prompt(prompt, self.prompt_tokens) if prompt is not None else None
    ranges = np.asarray(action_token_ranges(tokenizer.spec.action, self.layout), np.int32).reshape(-1, 2)
    with self._lock:
      if self._stopping:
        raise RequestError("the server is shutting down", 503)
      if not self._free:
        raise RequestError(f"all {self.max_sessions} sessions are in use; close one or retry later", 503)
      session = Session(secrets.token_hex(8), tokenizer, History(prompt_streams), self._free.pop(0),
                        int(seed if seed is not None else next(self._seeds)), ranges,
                        cache_len=self.context_length + 1, last_used=time.monotonic())
      self.sessions[session.id] = session
    return session

  def get(self, session_id: str) -> Session:
    session = self.sessions.get(session_id)
    if session is None:
      raise RequestError(f"unknown session {session_id!r} (never created, closed, or evicted when idle)", 404)
    return session

  def close(self, session_id: str) -> None:
    with self._lock:
      session = self.get(session_id)
      del self.sessions[session_id]
      if session.busy:  # the loop still writes its slot: free it after that call
        session.closed = True
      else:
        self._free.append(session.slot)

  def evict_idle(self, idle_s: float) -> list[str]:
    """Closes sessions with no request for `idle_s` seconds (none in flight); returns their ids."""
    now = time.monotonic()
    with self._lock:
      idle = [s.id for s in self.sessions.values() if not s.busy and now - s.last_used > idle_s]
    for session_id in idle:
      try:
        self.close(session_id)
      except RequestError:
        pass  # closed meanwhile
    return idle

  def submit(self, session_id: str, observation: dict) -> concurrent.futures.Future:
    """Queues one step; the future's result is the action (a NumPy value of the task's space)."""
    session = self.get(session_id)
    stream = session.tokenizer.observation(observation)  # ValueError naming the field when malformed
    need = len(stream["tokens"]) + 1 + len(session.ranges)
    if need > self.context_length:
      raise RequestError(f"task {session.task!r}: one timestep is {need} tokens, more than the server's "
                         f"context of {self.context_length}")
    future = concurrent.futures.Future()
    with self._lock:
      if self._stopping:
        raise RequestError("the server is shutting down", 503)
      if session.id not in self.sessions:
        raise RequestError(f"unknown session {session_id!r} (closed while acting)", 404)
      if session.busy:
        raise RequestError(f"session {session_id!r} already has an act request in flight", 409)
      session.busy, session.last_used = True, time.monotonic()
      self._queue.append(_Request(session, stream, future))
      self._lock.notify()
    return future

  def warm(self, task: str) -> int:
    """Compiles the step of `task` for every row bucket up to max_sessions and both chunk lengths (with
    and without a pending action token), and its re-prefill for every row bucket, on the scratch slot:
    no compile stalls while serving. Tasks
    with text observations vary in length and compile on demand. Returns the shapes compiled."""
    tokenizer = self.tokenizer_for(task)
    if any(f.modality == "text" for _, f in tokenizer.spec.observation_fields()):
      return 0
    length = 1 + sum(f.size for _, f in tokenizer.spec.observation_fields())  # the separator
    ranges = jnp.asarray(np.asarray(action_token_ranges(tokenizer.spec.action, self.layout), np.int32).reshape(-1, 2))
    images, shapes = decode.has_images(tokenizer.spec), 0
    with self._lock:  # the loop thread owns the pool: run while it waits
      for rows in sorted({_bucket(n) for n in range(1, self.max_sessions + 1)}):
        for chunk_len in (length, length + 1):
          chunk = {k: v[:, None] for k, v in stream_lib.pad([None] * rows, chunk_len, left=True).items()}
          zeros = jnp.zeros(rows, jnp.int32)
          _, self._pool, _ = self._act(self._params, self._pool, zeros + self._scratch, chunk, ranges,
                                       zeros.astype(jnp.uint32), zeros, jnp.float32(self.temperature),
                                       greedy=self.greedy, vocab=decode.vocab_window(ranges), images=images)
          shapes += 1
        # The re-prefills of `rows` sessions (lengths do not depend on the chunk: _roll_lengths), as
        # many rows as one call takes (_prefill_rows).
        for context_len in self._roll_lengths(self._roll_budget(length, len(ranges))):
          if rows > _prefill_rows(context_len):
            continue
          context = {k: v[:, None] for k, v in stream_lib.pad([None] * rows, context_len, left=True).items()}
          self._pool = self._extend(self._params, self._pool, jnp.full(rows, self._scratch, jnp.int32),
                                    jnp.zeros(rows, jnp.int32), context, images=images)
          shapes += 1
    return shapes

  def stop(self, timeout_s: float = 30.0) -> None:
    """Finishes the call in progress, refuses what is still queued (503), and stops the loop."""
    with self._lock:
      self._stopping = True
      self._lock.notify()
    self._thread.join(timeout_s)

  # ----------------------------------------------------------------------------------------------
  # The batching loop (its own thread; the only one that touches the pool).
  # ----------------------------------------------------------------------------------------------

  def _loop(self) -> None:
    while True:
      with self._lock:
        while not self._queue and not self._stopping:
          self._lock.wait()
        deadline = time.monotonic() + self.batch_wait_s
        while not self._stopping and not self._all_waiting() and time.monotonic() < deadline:
          self._lock.wait(max(deadline - time.monotonic(), 0.0))
        if self._stopping:
          for r in self._queue:
            r.session.busy = False
            r.future.set_exception(RequestError("the server is shutting down", 503))
          self._queue = []
          return
        batch, self._queue = self._queue, []
      groups: dict[str, list[_Request]] = {}
      for r in batch:
        groups.setdefault(r.session.task, []).append(r)
      for requests in groups.values():
        for i in range(0, len(requests), self.max_sessions):
          self._step(requests[i:i + self.max_sessions])

  def _all_waiting(self) -> bool:
    """Every open session has a step queued (the lock is held): nothing more to wait for."""
    return len(self._queue) >= len(self.sessions)

  def _step(self, requests: list[_Request]) -> None:
    """One decode call for sessions of one task (futures get the action or the error)."""
    start = time.perf_counter()
    try:
      actions, error = self._run(requests), None
    except Exception as e:  # pylint: disable=broad-except
      actions, error = [None] * len(requests), e
    with self._lock:
      for r in requests:
        r.session.busy, r.session.last_used = False, time.monotonic()
        if r.session.closed:
          self._free.append(r.session.slot)
    for r, action in zip(requests, actions):
      if error is not None:
        r.future.set_exception(error)
      else:
        r.future.set_result(action)
    if error is not None:
      return
    if self.on_batch is not None:
      self.on_batch(len(requests), time.perf_counter() - start)

  def _chunk_need(self, requests) -> tuple[int, int]:
    chunk_len = max((0 if r.session.history.pending is None else 1) + len(r.observation["tokens"])
                    for r in requests)
    return chunk_len, chunk_len + len(requests[0].session.ranges) - 1

  def _roll_budget(self, observation_len: int, actions: int) -> int:
    """Positions a re-prefill fills, whatever the sessions hold (one compiled shape per task): room is
    left for the largest step, a pending action token + the observation + the other action tokens."""
    return min(self.context_length - observation_len - actions, max(int(self.roll_keep * self.context_length), 0))

  def _keeps_prompt(self, budget: int) -> bool:
    return self.keeps_prompt and 0 < self.prompt_tokens < budget

  def _roll_lengths(self, budget: int) -> set[int]:
    """The context lengths a roll feeds: the whole budget (a slot without a kept prompt), and with
    kept prompts, the prompt (its first fill) and the budget after it (its later rolls)."""
    return {budget} | ({self.prompt_tokens, budget - self.prompt_tokens} if self._keeps_prompt(budget) else set())

  def _roll(self, sessions: list[Session], budget: int, images: bool) -> None:
    """Refills the sessions' slots, grouped by context length (or empties them): the first fill of a
    prompted slot is its prompt at [0, prompt_tokens), later rolls recompute only the latest steps after
    it; without a kept prompt, the prompt and the latest steps fill [0, budget)."""
    groups: dict[int, list] = {}
    for session in sessions:
      history, start = session.history, 0
      history.pending = None
      if self._keeps_prompt(budget) and history.prompt and session.prefix < 0:  # first fill: the prompt
        context, length = stream_lib.concat(history.prompt), self.prompt_tokens
        session.prefix = self.prompt_tokens
      elif self._keeps_prompt(budget) and session.prefix > 0:  # the prompt stays; the latest steps after it
        start, length = session.prefix, budget - session.prefix
        steps = prompts_lib.latest(history.steps, length)
        context = stream_lib.concat(steps) if steps else None  # None: all PAD, never attended
      else:
        context, length = history.context(budget), budget
        if context is None:  # nothing yet: an empty slot
          self._pool = self._clear(self._pool, session.slot)
          session.cache_len = 0
          continue
      groups.setdefault(length, []).append((session, start, context))
    for length, group in groups.items():
      most = _prefill_rows(length)
      for first in range(0, len(group), most):
        members = group[first:first + most]
        rows = _bucket(len(members))
        members += [(None, 0, members[0][2])] * (rows - len(members))  # padding rows: the scratch slot
        padded = {k: v[:, None] for k, v in stream_lib.pad([c for _, _, c in members], length, left=True).items()}
        slots = [self._scratch if s is None else s.slot for s, _, _ in members]
        self._pool = self._extend(self._params, self._pool, jnp.asarray(slots, jnp.int32),
                                  jnp.asarray([start for _, start, _ in members], jnp.int32), padded, images=images)
        for session, start, _ in members:
          if session is not None:
            session.cache_len = start + length

  def _run(self, requests: list[_Request]) -> list[Any]:
    _, need = self._chunk_need(requests)
    budget = self._roll_budget(max(len(r.observation["tokens"]) for r in requests), len(requests[0].session.ranges))
    images = decode.has_images(requests[0].session.tokenizer.spec)
    self._roll([r.session for r in requests if r.session.cache_len + need > self.context_length], budget, images)
    chunk_len, need = self._chunk_need(requests)
    rows = _bucket(len(requests))
    chunks = [r.session.history.chunk(r.observation) for r in requests]
    chunks += [chunks[0]] * (rows - len(requests))  # padding rows: any valid chunk, written to scratch
    chunk = stream_lib.pad(chunks, chunk_len, left=True)
    chunk = {k: v[:, None] for k, v in chunk.items()}  # [N, 1, S]: one batch-1 cache per row
    slots = [r.session.slot for r in requests] + [self._scratch] * (rows - len(requests))
    seeds = [r.session.seed for r in requests] + [0] * (rows - len(requests))
    steps = [r.session.steps for r in requests] + [0] * (rows - len(requests))
    tokens, self._pool, finite = self._act(
        self._params, self._pool, jnp.asarray(slots, jnp.int32), chunk, jnp.asarray(requests[0].session.ranges),
        jnp.asarray(seeds, jnp.uint32), jnp.asarray(steps, jnp.int32), jnp.float32(self.temperature),
        greedy=self.greedy, vocab=decode.vocab_window(requests[0].session.ranges), images=images)
    tokens, finite = np.asarray(tokens), np.asarray(finite)
    actions = []
    for row, r in enumerate(requests):
      session = r.session
      if not finite[row]:
        raise FloatingPointError(f"task {session.task!r}: the model produced non-finite logits")
      session.history.record(r.observation, tokens[row], cached=True)
      session.cache_len += need
      session.steps += 1
      actions.append(action_from_tokens(tokens[row], session.tokenizer.spec.action, self.layout))
    return actions
