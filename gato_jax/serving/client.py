"""A client of gato-serve (requests): sessions and steps, and the rollout actor `gato-eval --server` uses.

  client = Client("http://127.0.0.1:8000")
  session = client.create("cartpole", prompt=demo_episode)
  action = client.act(session, {"state": observation})
  client.close(session)

Every call has a timeout; a server that is down, restarting or refusing gets one-line `ServerError`s.
"""

import concurrent.futures
import json
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import requests

from gato_jax.acting.agent import prompt_for, shuffled
from gato_jax.serving import protocol


class ServerError(RuntimeError):
  """gato-serve could not be reached or refused a request; `status` is the HTTP status (0: no answer)."""

  def __init__(self, message: str, status: int = 0):
    super().__init__(message)
    self.status = status


class Client:
  """Calls one gato-serve; safe to share between threads (one connection pool)."""

  def __init__(self, url: str, timeout_s: float = 120.0, pool_size: int = 64):
    self.url, self.timeout_s = url.rstrip("/"), float(timeout_s)
    self.http = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
    self.http.mount("http://", adapter)

  def call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
    try:
      # NaN / inf go out as JSON's NaN / Infinity: the server, not the client, judges an observation.
      data = None if body is None else json.dumps(body)
      response = self.http.request(method, self.url + path, data=data, timeout=self.timeout_s,
                                   headers={"Content-Type": "application/json"})
    except requests.Timeout:
      raise ServerError(f"gato-serve at {self.url} did not answer {method} {path} within "
                        f"{self.timeout_s:g} s") from None
    except requests.ConnectionError as e:
      reason = str(e).split("] ")[-1].rstrip("'))\"") if "] " in str(e) else type(e).__name__
      raise ServerError(f"gato-serve at {self.url} is not reachable ({method} {path}: {reason})") from None
    if response.status_code >= 400:
      try:
        message = response.json()["error"]
      except (ValueError, KeyError, TypeError):
        message = response.text[:200]
      raise ServerError(f"gato-serve {method} {path}: HTTP {response.status_code}: {message}", response.status_code)
    return response.json()

  def create(self, task: str, prompt: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None) -> str:
    """A new session of `task` (prompted by a demonstration episode when given); returns its id."""
    body: dict = {"task": task}
    if prompt is not None:
      body["prompt"] = protocol.episode_to_json(prompt)
    if seed is not None:
      body["seed"] = int(seed)
    return self.call("POST", "/sessions", body)["session"]

  def act(self, session: str, observation: Mapping[str, Any]):
    """The action for `observation` (NumPy, in the task's action space)."""
    return np.asarray(self.call("POST", f"/sessions/{session}/act", {"observation": _plain(observation)})["action"])

  def close(self, session: str) -> None:
    self.call("DELETE", f"/sessions/{session}")

  def health(self) -> dict:
    return self.call("GET", "/health")

  def metrics(self) -> dict:
    return self.call("GET", "/metrics")


def _plain(tree):
  return {k: _plain(v) if isinstance(v, Mapping) else v if isinstance(v, str) else np.asarray(v).tolist()
          for k, v in tree.items()}


class ServedActor:
  """rollout.Actor over gato-serve: each episode of a batch is a session (its env seed is the session's
  sampling seed), prompted by the demonstration GatoActor would choose; the batch's steps are sent
  at once, so the server runs them in one call."""

  def __init__(self, client: Client, task: str, demonstrations: Optional[Sequence[Mapping[str, Any]]] = None,
               seed: int = 0):
    self.client, self.task = client, task
    self._demonstrations = shuffled(list(demonstrations or []), seed)
    self._sessions: list[str] = []
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="served-actor")

  def begin(self, seeds: Sequence[int]) -> None:
    self.end()
    self._sessions = [self.client.create(self.task, prompt_for(self._demonstrations, s), seed=s) for s in seeds]

  def act(self, observations, raw_observations=None, envs=None) -> list:
    del raw_observations, envs
    futures = [None if o is None else self._pool.submit(self.client.act, s, o)
               for s, o in zip(self._sessions, observations)]
    return [None if f is None else f.result() for f in futures]

  def end(self) -> None:
    """Closes this actor's sessions (a server that is gone has closed them already)."""
    for session in self._sessions:
      try:
        self.client.close(session)
      except ServerError:
        pass
    self._sessions = []
