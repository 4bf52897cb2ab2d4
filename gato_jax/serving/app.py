"""gato-serve's HTTP application (Starlette): sessions, act, health and metrics over one Engine.

Handlers never touch the device: they check and tokenize the request, queue it with the engine, and
await its future, so every connection's step lands in the engine's next batched call. Bad requests
get a 4xx whose JSON body is one line, {"error": "..."}; nothing a client sends stops the server.
"""

import asyncio
import bisect
import collections
import contextlib
import json
import threading
import time
from typing import Optional

from absl import logging
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gato_jax.serving import protocol
from gato_jax.serving.engine import Engine, RequestError

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
RATE_WINDOW_S = 10.0


class Histogram:
  """Counts per upper bound (the last bucket is +inf), plus count and sum."""

  def __init__(self, bounds):
    self.bounds = tuple(bounds)
    self.counts = [0] * (len(self.bounds) + 1)
    self.count, self.total = 0, 0.0

  def add(self, value: float) -> None:
    self.counts[bisect.bisect_left(self.bounds, value)] += 1
    self.count += 1
    self.total += value

  def to_json(self) -> dict:
    return {"buckets": [{"le": b, "count": c} for b, c in zip(list(self.bounds) + ["inf"], self.counts)],
            "count": self.count, "sum": round(self.total, 3)}


class Metrics:
  """What /metrics reports: act latency, batch sizes, sessions, actions/s, refusals by status."""

  def __init__(self):
    self.lock = threading.Lock()
    self.start = time.monotonic()
    self.act_ms = Histogram(LATENCY_BUCKETS_MS)
    self.batch_ms = Histogram(LATENCY_BUCKETS_MS)
    self.batch_sizes = Histogram((1, 2, 4, 8, 16, 32, 64, 128, 256))
    self.actions = 0
    self.recent = collections.deque()  # monotonic times of recent actions (the rate window)
    self.sessions = collections.Counter()  # created / closed / evicted
    self.errors = collections.Counter()  # HTTP status -> count

  def on_batch(self, size: int, seconds: float) -> None:
    now = time.monotonic()
    with self.lock:
      self.batch_sizes.add(size)
      self.batch_ms.add(seconds * 1e3)
      self.actions += size
      self.recent.extend([now] * size)
      while self.recent and self.recent[0] < now - RATE_WINDOW_S:
        self.recent.popleft()

  def to_json(self, engine: Engine) -> dict:
    now = time.monotonic()
    with self.lock:
      recent = sum(1 for t in self.recent if t >= now - RATE_WINDOW_S)
      return {"uptime_s": round(now - self.start, 3), "sessions_open": len(engine.sessions),
              "max_sessions": engine.max_sessions, "sessions": dict(self.sessions), "actions": self.actions,
              "actions_per_s": round(recent / min(RATE_WINDOW_S, max(now - self.start, 1e-9)), 3),
              "act_latency_ms": self.act_ms.to_json(), "batch_latency_ms": self.batch_ms.to_json(),
              "batch_size": self.batch_sizes.to_json(), "errors": {str(k): v for k, v in self.errors.items()}}


def _error(metrics: Metrics, message: str, status: int) -> JSONResponse:
  with metrics.lock:
    metrics.errors[status] += 1
  return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def _body(request: Request):
  try:
    return json.loads(await request.body())
  except ClientDisconnect:
    raise RequestError("the client disconnected before sending the whole request", 499) from None
  except (ValueError, UnicodeDecodeError) as e:
    raise RequestError(f"request body is not JSON ({e})") from None


def build_app(engine: Engine, idle_timeout_s: float = 600.0, info: Optional[dict] = None) -> Starlette:
  """The Starlette app over `engine`; idle sessions are closed after `idle_timeout_s`; `info` (the
  checkpoint, its step, the sampling settings) is reported by /health."""
  metrics = Metrics()
  engine.on_batch = metrics.on_batch

  def guarded(handler):
    async def endpoint(request: Request):
      try:
        return await handler(request)
      except RequestError as e:
        return _error(metrics, str(e), e.status)
      except ValueError as e:  # the request's content, named by the tokenizer or the protocol
        return _error(metrics, str(e), 400)
    return endpoint

  async def create(request: Request):
    body = await _body(request)
    task = protocol.field(body, "task", str)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32):
      raise RequestError(f"request: field 'seed' must be an integer in [0, 2**32), got {seed!r}")
    prompt = body.get("prompt")
    if prompt is not None:
      prompt = protocol.episode_from_json(prompt, engine.tokenizer_for(task).spec)
    session = engine.create(task, prompt, seed)
    with metrics.lock:
      metrics.sessions["created"] += 1
    return JSONResponse({"session": session.id, "task": session.task, "seed": session.seed,
                         "spec": session.tokenizer.spec.to_dict()}, status_code=201)

  async def act(request: Request):
    start = time.perf_counter()
    session = engine.get(request.path_params["session_id"])
    body = await _body(request)
    observation = protocol.observation_from_json(protocol.field(body, "observation", dict),
                                                 session.tokenizer.spec)
    future = engine.submit(session.id, observation)
    action = await asyncio.wrap_future(future)
    with metrics.lock:
      metrics.act_ms.add((time.perf_counter() - start) * 1e3)
    return JSONResponse({"action": protocol.action_to_json(action), "step": session.steps})

  async def close(request: Request):
    session_id = request.path_params["session_id"]
    engine.close(session_id)
    with metrics.lock:
      metrics.sessions["closed"] += 1
    return JSONResponse({"closed": session_id})

  async def health(request: Request):
    del request
    return JSONResponse({"status": "ok", "sessions": len(engine.sessions), "max_sessions": engine.max_sessions,
                         **(info or {})})

  async def metrics_endpoint(request: Request):
    del request
    return JSONResponse(metrics.to_json(engine))

  async def evict_loop():
    while True:
      await asyncio.sleep(max(0.05, min(idle_timeout_s / 4, 5.0)))
      evicted = engine.evict_idle(idle_timeout_s)
      if evicted:
        logging.info("gato-serve: evicted %d idle session(s)", len(evicted))
        with metrics.lock:
          metrics.sessions["evicted"] += len(evicted)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    evictor = asyncio.create_task(evict_loop())
    try:
      yield
    finally:
      evictor.cancel()
      engine.stop()  # in-flight requests have finished (uvicorn's graceful shutdown); the rest get 503
      logging.info("gato-serve: stopped")

  routes = [Route("/sessions", guarded(create), methods=["POST"]),
            Route("/sessions/{session_id}/act", guarded(act), methods=["POST"]),
            Route("/sessions/{session_id}", guarded(close), methods=["DELETE"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"])]
  return Starlette(routes=routes, lifespan=lifespan)
