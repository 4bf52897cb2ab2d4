"""A lost peer ends this process with exit 75 and one line, not an abort (134) after a library dump.

jax.distributed's client, told by the coordination service that a process stopped heartbeating (or
unable to reach the service itself: a dead coordinator), calls its `missed_heartbeat_callback`,
whose default logs a fatal error with a C++ stack dump and aborts. jax.distributed.initialize does
not expose that argument, so `exit_on_lost_peer` wraps the client factory for the duration of the call
to pass ours (the one place this reaches into jax's internals; if it moves, a warning says so). In
jaxlib 0.10 calling a Python callback fails converting its status argument (std::bad_cast, then
abort), so a SIGABRT handler is installed too: in a joined job an abort comes from that runtime path,
and it is turned into the same one line and exit 75 instead of a core dump.
"""

import contextlib
import ctypes
import os
import signal
import sys

from absl import logging

EXIT_PEER_LOST = 75
_context = {"program": "gato-train", "process": None, "count": None}


def describe(extra: str = "") -> str:
  who = (f"process {_context['process']} of {_context['count']}: " if _context["count"] else "")
  return (f"{who}another process died or lost contact with the job{extra}. Restart the whole job to "
          "resume from the last committed checkpoint")


def _on_missed_heartbeat(*args) -> None:
  status = " ".join(str(a) for a in args).strip().splitlines()
  detail = f" (coordination service: {status[0][:200]})" if status and status[0] else ""
  logging.error("Peer lost%s.", detail)
  print(f"{_context['program']}: {describe(detail)}", file=sys.stderr, flush=True)
  # No interpreter shutdown: jax.distributed's atexit shutdown would wait for the dead peer.
  os._exit(EXIT_PEER_LOST)  # pylint: disable=protected-access


def _on_abort(signum) -> None:
  del signum
  os.write(2, (f"{_context['program']}: " + describe(" (the jax runtime aborted on an error from the "
                                                   "coordination service; see the lines above)") + "\n").encode())
  os._exit(EXIT_PEER_LOST)  # pylint: disable=protected-access


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)(_on_abort)  # kept alive: libc holds its address


def _exit_75_on_abort() -> None:
  """A C-level SIGABRT handler (a Python one would never run: abort() kills the process first)."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, _HANDLER.__class__)
    libc.signal(signal.SIGABRT, _HANDLER)
  except (OSError, AttributeError) as e:
    logging.warning("Cannot install the SIGABRT handler (%s): a lost peer aborts the process.", e)


@contextlib.contextmanager
def exit_on_lost_peer(process_id, num_processes, program: str = "gato-train"):
  """Around jax.distributed.initialize: the client it creates exits 75 when a peer is lost."""
  _context.update(program=program, process=process_id, count=num_processes)
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top  # private API, guarded below
    factory = distributed._jax.get_distributed_runtime_client  # pylint: disable=protected-access
  except (ImportError, AttributeError) as e:
    logging.warning("Cannot install the lost-peer handler (%s): a lost peer aborts the process.", e)
    yield
    return

  def with_callback(*args, **kwargs):
    kwargs.setdefault("missed_heartbeat_callback", _on_missed_heartbeat)
    return factory(*args, **kwargs)

  distributed._jax.get_distributed_runtime_client = with_callback  # pylint: disable=protected-access
  try:
    yield
  finally:
    distributed._jax.get_distributed_runtime_client = factory  # pylint: disable=protected-access
  if distributed.global_state.client is not None:  # joined: from now on an abort means a lost peer
    _exit_75_on_abort()
