"""SIGTERM and SIGINT for gato-train: save and exit (143 / 130), a second Ctrl-C exits at once, and a
save that cannot finish (a dead peer, hung storage) never makes the process ignore the signal.

Why a thread: the training thread spends its time inside XLA and Orbax (collectives, coordination-
service barriers), where a Python signal handler cannot run, and in a multi-process job jax's
preemption service replaces the SIGTERM handler with its own C++ one, which only sets a flag that
the loop reads between steps. A survivor blocked in a barrier with a dead peer therefore never
reacted to the launcher's SIGTERM. Here both signals are blocked in every thread and received by
one waiting thread (`signal.sigwait`), which
  1. forwards the first one, as SIGTERM, to whatever handler is installed (the loop's
     PreemptionWatcher or jax's preemption service), by unblocking it in this thread only and
     signalling itself: the usual coordinated "save after this step, then exit" path runs;
  2. exits the process itself, with one line, if it has not ended `timeout_s` later;
  3. exits at once on a second signal (a second Ctrl-C).
"""

import os
import signal
import sys
import threading

from absl import logging

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_TIMEOUT_S = 25.0  # under Kubernetes' default 30 s grace before SIGKILL
TIMEOUT_VARIABLE = "GATO_STOP_TIMEOUT_S"  # set by launch/local.py below its own grace period
EXIT_PEER_LOST = 75

_state = {"signum": None, "program": "gato-train", "timeout_s": DEFAULT_TIMEOUT_S}


def received() -> int | None:
  """The first stop signal received (SIGTERM or SIGINT), or None."""
  return _state["signum"]


def exit_status(default: int = 128 + signal.SIGTERM) -> int:
  """128 + the signal that stopped the run (130 for Ctrl-C, 143 for SIGTERM)."""
  return 128 + _state["signum"] if _state["signum"] else default


def _say(message: str) -> None:
  print(f"{_state['program']}: {message}", file=sys.stderr, flush=True)


def _multi_process() -> bool:
  """Joined to other processes by jax.distributed; asked without jax.process_count(), which would
  start the backends and so break a jax.distributed.initialize still to come."""
  distributed = sys.modules.get("jax._src.distributed")
  state = getattr(distributed, "global_state", None)
  return state is not None and state.client is not None and (state.num_processes or 1) > 1


def _forward() -> bool:
  """Delivers SIGTERM to the installed handler; False when there is none (SIG_DFL: not training yet).
  Joined to other processes, jax's preemption service holds it (a C handler Python does not see)."""
  if not _multi_process() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    return False
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
  try:
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # runs the handler before returning
  finally:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
  return True


def _deadline(signum: int) -> None:
  name = signal.Signals(signum).name
  if _multi_process():
    _say(f"{name} received {_state['timeout_s']:g}s ago and the checkpoint save it asked for has not "
         "finished: a peer process is probably gone. Exiting without saving; restart the whole job to "
         "resume from the last committed checkpoint")
    os._exit(EXIT_PEER_LOST)  # pylint: disable=protected-access
  _say(f"{name} received {_state['timeout_s']:g}s ago and the checkpoint save has not finished (storage "
       "not answering?). Exiting without saving; the last committed checkpoint is intact")
  os._exit(128 + signum)  # pylint: disable=protected-access


def _wait() -> None:
  while True:
    signum = signal.sigwait(set(SIGNALS))
    name = signal.Signals(signum).name
    if _state["signum"] is not None:
      _say(f"second {name}: exiting now, without saving")
      os._exit(128 + signum)  # pylint: disable=protected-access
    _state["signum"] = signum
    if not _forward():
      _say(f"{name} outside the training loop (nothing to save): exiting")
      os._exit(128 + signum)  # pylint: disable=protected-access
    logging.warning("Received %s: saving a checkpoint after the current step, then exiting%s.", name,
                    " (Ctrl-C again to exit at once)" if signum == signal.SIGINT else "")
    timer = threading.Timer(_state["timeout_s"], _deadline, args=(signum,))
    timer.daemon = True
    timer.start()


def install(program: str = "gato-train", timeout_s: float | None = None) -> None:
  """Call first thing in the entry point, before any thread is started: threads inherit the blocked
  mask, so only the waiting thread ever receives the two signals."""
  if threading.current_thread() is not threading.main_thread() or _state.get("installed"):
    return
  if timeout_s is None:
    timeout_s = float(os.environ.get(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT_S)
  _state.update(program=program, timeout_s=timeout_s, installed=True)
  signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
  threading.Thread(target=_wait, daemon=True, name="stop-signals").start()
