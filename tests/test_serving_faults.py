"""gato-serve under load and faults, on loopback with bounded counts and timeouts: 64 concurrent clients
with no lost or crossed step, clients that disconnect mid-request, a server killed mid-load and
restarted on the same port (clients get one-line errors, nothing hangs)."""

import concurrent.futures
import signal
import socket
import time

import numpy as np
import pytest

from gato_jax.serving.client import Client, ServerError
from testlib import eval_testing as testing
from testlib import serving_testing

pytestmark = pytest.mark.slow  # servers started, every batch size compiled

TIMEOUT_S = 60
STEPS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("served"))
  testing.write_checkpoint(testing.tiny_config(), workdir, step=2, seed=5)
  return workdir


def _observations(i: int) -> list[dict]:
  rng = np.random.default_rng(1000 + i)
  return [{"state": rng.uniform(-1, 1, 4).round(3).tolist()} for _ in range(STEPS)]


def _client_run(url: str, i: int) -> list[int]:
  """One client: its own session (seed i), STEPS steps; checks the server's step count each time."""
  client = Client(url, timeout_s=TIMEOUT_S, pool_size=1)
  session = client.create("cartpole", seed=i)
  actions = []
  for step, observation in enumerate(_observations(i), start=1):
    answer = client.call("POST", f"/sessions/{session}/act", {"observation": observation})
    assert answer["step"] == step, (i, answer)
    actions.append(int(answer["action"]))
  client.close(session)
  return actions


def _disconnect_mid_request(url: str, session: str, whole_body: bool) -> None:
  """Sends an act request (whole, or cut in the middle of its body) and hangs up without reading."""
  host, port = url.split("//")[1].split(":")
  body = b'{"observation": {"state": [0.1, 0.2, 0.3, 0.4]}}'
  head = (f"POST /sessions/{session}/act HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\n\r\n").encode()
  with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
    sock.sendall(head + (body if whole_body else body[:10]))


def test_64_concurrent_clients_and_clients_that_hang_up(checkpoint, tmp_path):
  served = serving_testing.start(checkpoint, str(tmp_path), "--max_sessions=64")
  try:
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
      together = list(pool.map(lambda i: _client_run(served.url, i), range(64)))
    # No crossed session: each session's actions are what it gets alone (its seed, its observations).
    for i in (0, 37, 63):
      assert _client_run(served.url, i) == together[i]
    client = Client(served.url, timeout_s=TIMEOUT_S)
    metrics = client.metrics()
    assert metrics["actions"] == 67 * STEPS and metrics["sessions_open"] == 0
    assert max(b["le"] for b in metrics["batch_size"]["buckets"] if b["count"] and b["le"] != "inf") > 4

    session = client.create("cartpole", seed=9)
    _disconnect_mid_request(served.url, session, whole_body=True)
    _disconnect_mid_request(served.url, session, whole_body=False)
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the hung-up step may still be running; then the session is briefly busy (409)
      try:
        assert int(client.act(session, {"state": [0.0, 0.0, 0.0, 0.0]})) in (0, 1)
        break
      except ServerError as e:
        assert e.status == 409 and time.monotonic() < deadline, str(e)
        time.sleep(0.1)
    assert _client_run(served.url, 1) == together[1]  # everyone else is still served, unchanged
  finally:
    assert served.stop() == 0, served.output()[-2000:]


def test_a_killed_server_gives_clear_errors_and_a_restart_serves_again(checkpoint, tmp_path):
  served = serving_testing.start(checkpoint, str(tmp_path))
  client = Client(served.url, timeout_s=TIMEOUT_S)
  sessions = [client.create("cartpole", seed=i) for i in range(8)]
  assert int(client.act(sessions[0], {"state": [0.0] * 4})) in (0, 1)

  def keep_acting(session):
    try:
      while True:
        client.act(session, {"state": [0.0] * 4})
    except ServerError as e:
      return str(e)

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    running = [pool.submit(keep_acting, s) for s in sessions]
    time.sleep(1.0)
    served.stop(signal.SIGKILL)
    start = time.monotonic()
    errors = [f.result(timeout=TIMEOUT_S) for f in running]  # nothing hangs
  assert time.monotonic() - start < TIMEOUT_S
  assert all("is not reachable" in e and "\n" not in e for e in errors), errors
  with pytest.raises(ServerError, match="is not reachable"):
    client.create("cartpole")

  port = int(served.url.rsplit(":", 1)[1])
  restarted = serving_testing.start(checkpoint, str(tmp_path), port=port)
  try:
    with pytest.raises(ServerError, match="unknown session"):  # sessions do not survive a restart
      client.act(sessions[0], {"state": [0.0] * 4})
    assert int(client.act(client.create("cartpole"), {"state": [0.0] * 4})) in (0, 1)
  finally:
    assert restarted.stop() == 0, restarted.output()[-2000:]
