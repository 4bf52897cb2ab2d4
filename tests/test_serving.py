"""gato-serve against a started server (requests, loopback, bounded): sessions, batching without crossed
sessions, one-line 4xx for malformed requests while others are served, metrics, eviction, SIGTERM."""

import concurrent.futures
import signal
import time

import numpy as np
import pytest
import requests

from gato_jax.serving.client import Client, ServerError
from testlib import eval_testing as testing
from testlib import serving_testing

TIMEOUT_S = 60  # every client call
OBS = {"state": [0.1, -0.2, 0.03, 0.4]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("served"))
  testing.write_checkpoint(testing.tiny_config(), workdir, step=2, seed=3)
  return workdir


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
  served = serving_testing.start(checkpoint, str(tmp_path_factory.mktemp("srv")), "--max_sessions=16")
  yield served
  served.stop()


def _observations(i: int, steps: int) -> list[dict]:
  rng = np.random.default_rng(i)
  return [{"state": rng.uniform(-1, 1, 4).round(3).tolist()} for _ in range(steps)]


def _episode(client: Client, seed: int, observations) -> list[int]:
  session = client.create("cartpole", seed=seed)
  try:
    return [int(client.act(session, o)) for o in observations]
  finally:
    client.close(session)


@pytest.mark.slow  # compiles a row bucket per batch size it sees
def test_batched_sessions_act_as_each_would_alone(server):
  """8 sessions at once through the batcher get exactly the actions each gets alone (same seed, same
  observations): batching neither crosses nor perturbs sessions, and the metrics saw batches > 1."""
  client = Client(server.url, timeout_s=TIMEOUT_S)
  steps = 6
  alone = {i: _episode(client, 100 + i, _observations(i, steps)) for i in (0, 5)}
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    together = dict(zip(range(8), pool.map(lambda i: _episode(client, 100 + i, _observations(i, steps)), range(8))))
  assert {i: together[i] for i in alone} == alone
  metrics = client.metrics()
  assert metrics["actions"] >= 8 * steps + 2 * steps
  batched = sum(b["count"] for b in metrics["batch_size"]["buckets"] if b["le"] != 1)
  assert batched > 0, metrics["batch_size"]
  assert metrics["act_latency_ms"]["count"] == metrics["actions"]
  assert metrics["sessions"]["created"] == metrics["sessions"]["closed"] == 10


def test_malformed_requests_get_one_line_4xx_and_others_keep_being_served(server):
  client = Client(server.url, timeout_s=TIMEOUT_S)
  good = client.create("cartpole", seed=1)
  bad = client.create("cartpole", seed=2)
  cases = [
      ("POST", f"/sessions/{bad}/act", {"observation": {"state": [0.1, 0.2]}}, 400, "shape (2,), expected (4,)"),
      ("POST", f"/sessions/{bad}/act", {"observation": {"state": [0.1, float("nan"), 0, 0]}}, 400, "NaN"),
      ("POST", f"/sessions/{bad}/act", {"observation": {"position": [0, 0, 0, 0]}}, 400, "missing field 'state'"),
      ("POST", f"/sessions/{bad}/act", {"observation": {"state": ["a", "b", "c", "d"]}}, 400, "expected numbers"),
      ("POST", f"/sessions/{bad}/act", {"obs": {}}, 400, "missing field 'observation'"),
      ("POST", "/sessions", {"task": "no_such_task"}, 400, "unknown control task 'no_such_task'"),
      ("POST", "/sessions", {"task": "cartpole", "seed": -1}, 400, "field 'seed'"),
      ("POST", "/sessions", {"task": "cartpole", "prompt": {"steps": {"reward": [1.0]}}}, 400, "missing field 'action'"),
      ("POST", "/sessions/nope/act", {"observation": OBS}, 404, "unknown session 'nope'"),
      ("DELETE", "/sessions/nope", None, 404, "unknown session 'nope'"),
  ]
  for method, path, body, status, words in cases:
    with pytest.raises(ServerError) as raised:
      client.call(method, path, body)
    assert raised.value.status == status and words in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)
    assert int(client.act(good, OBS)) in (0, 1)  # the server keeps serving
  response = requests.post(f"{server.url}/sessions/{good}/act", data=b"{not json", timeout=TIMEOUT_S)
  assert response.status_code == 400 and "not JSON" in response.json()["error"]
  assert int(client.act(bad, OBS)) in (0, 1)  # refused requests left the session usable
  client.close(good)
  client.close(bad)
  assert client.metrics()["errors"]["400"] >= 9


def test_a_prompted_session_and_health(server):
  client = Client(server.url, timeout_s=TIMEOUT_S)
  assert client.health()["status"] == "ok"
  demo = {"steps": {"observation": {"state": np.zeros((3, 4), np.float32)}, "action": np.array([0, 1, 0]),
                    "reward": np.ones(3, np.float32)}}
  session = client.create("cartpole", prompt=demo, seed=4)
  assert [int(client.act(session, o)) in (0, 1) for o in _observations(9, 3)] == [True] * 3
  client.close(session)
  with pytest.raises(ServerError, match="HTTP 404"):
    client.act(session, OBS)


@pytest.mark.slow  # a second server
def test_idle_sessions_are_evicted_and_sigterm_stops_gracefully(checkpoint, tmp_path):
  served = serving_testing.start(checkpoint, str(tmp_path), "--idle_timeout_s=1", "--max_sessions=2",
                                 "--warm_tasks=cartpole")
  try:
    client = Client(served.url, timeout_s=TIMEOUT_S)
    idle = client.create("cartpole")
    client.create("cartpole")
    with pytest.raises(ServerError, match="all 2 sessions are in use"):
      client.create("cartpole")
    deadline = time.monotonic() + 30
    while client.metrics()["sessions"].get("evicted", 0) < 2 and time.monotonic() < deadline:
      time.sleep(0.3)
    with pytest.raises(ServerError, match="evicted when idle"):
      client.act(idle, OBS)
    assert int(client.act(client.create("cartpole"), OBS)) in (0, 1)  # the slots came back
  finally:
    status = served.stop(signal.SIGTERM)
  assert status == 0, served.output()[-2000:]
  assert "gato-serve: stopped" in served.output()
  # One row bucket (2): a step for each of two chunk lengths, and three re-prefill lengths (the prompt,
  # the steps after a kept prompt, a whole window without one).
  assert "cartpole: 5 shapes compiled (steps and re-prefills)" in served.output(), served.output()[-3000:]
