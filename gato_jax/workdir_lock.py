"""One writer per workdir: an OS lock on local disks, a heartbeat lock object on buckets.

Local disks (and NFS, which emulates flock with its byte-range locks): process i of a job holds an
exclusive `fcntl.flock` on `<workdir>/.lock` (process 0) or `<workdir>/.lock.process_<i>`, written
with the holder (host, pid, start time). The kernel releases it when the process dies however it
dies, so a lock left by a SIGKILLed run is simply taken over; the file's text only names the holder.
Each process locks its own file so that every process of a second job on the same workdir is refused
at once (with a single shared file only its process 0 would be, and the others would wait for it).

Buckets (gs://, s3://...) have no lock a client can hold and no create-if-absent through the file
APIs used here, so there it is advisory: `<workdir>/lock.json` names the holder and is rewritten every
`HEARTBEAT_S`; a record fresher than `STALE_S` refuses a second run, an older one is taken over.
Two runs started within the same few seconds can both pass the check: after writing its record each
run waits `SETTLE_S` and reads it back, and the one whose record was overwritten stops, which closes
that window except for writes that race within the storage's own consistency delay.
"""

import datetime
import errno
import json
import os
import socket
import threading
import time

from absl import logging

HEARTBEAT_S, STALE_S, SETTLE_S = 60.0, 300.0, 2.0


class WorkdirError(ValueError):
  """The workdir cannot hold a run (it is a file, or cannot be created)."""


class WorkdirBusy(RuntimeError):
  """Another live gato-train holds the workdir; the message names it."""


def _holder() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def _describe(record: dict | None) -> str:
  if not record:
    return "an unknown process"
  return f"host {record.get('host')}, pid {record.get('pid')}, started {record.get('started')}"


def _busy(workdir: str, record: dict | None, where: str) -> WorkdirBusy:
  return WorkdirBusy(f"--workdir={workdir} is in use by another gato-train ({_describe(record)}; lock "
                     f"{where}): one run per workdir. Wait for it to end or stop it, or use another workdir")


def lock_name(process_index: int) -> str:
  return ".lock" if process_index == 0 else f".lock.process_{process_index}"


class LocalLock:
  """An exclusive flock on a file of a local (or NFS) workdir, held until `release` or process exit."""

  def __init__(self, workdir: str, process_index: int = 0):
    self.workdir = workdir
    self.path = os.path.join(workdir, lock_name(process_index))
    self._fd: int | None = None
    self._created = False

  def acquire(self) -> "LocalLock":
    import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise WorkdirError(f"--workdir={self.workdir} is a file, not a directory")
    try:
      self._created = not os.path.exists(self.workdir)
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f"--workdir={self.workdir}: cannot create the run's lock {self.path} "
                         f"({e.strerror or e})") from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        os.close(fd)
        raise WorkdirError(f"--workdir={self.workdir}: cannot lock {self.path} ({e.strerror or e})") from e
      record = _read_json(lambda: os.pread(fd, 4096, 0).decode("utf-8", "replace"))
      os.close(fd)
      raise _busy(self.workdir, record, self.path) from None
    # Ours now (any earlier holder is dead: the kernel released its lock); its record is overwritten.
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder()).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor releases the flock
      self._fd = None

  def discard(self) -> None:
    """Releases the lock and removes its file, and the workdir if this run created it and it is empty:
    a run refused for its config leaves nothing behind."""
    if self._fd is None:
      return
    os.remove(self.path)
    self.release()
    if self._created:
      try:
        os.rmdir(self.workdir)
      except OSError:
        pass


class ObjectLock:
  """The advisory lock record of a bucket workdir (module docstring: what it does and does not ensure)."""

  def __init__(self, workdir: str, process_index: int = 0, *, heartbeat_s: float = HEARTBEAT_S,
               stale_s: float = STALE_S, settle_s: float = SETTLE_S):
    from etils import epath  # pylint: disable=g-import-not-at-top  # remote workdirs only
    self.workdir = workdir
    name = "lock.json" if process_index == 0 else f"lock.process_{process_index}.json"
    self.path = epath.Path(workdir) / name
    self._heartbeat_s, self._stale_s, self._settle_s = heartbeat_s, stale_s, settle_s
    self._record = dict(_holder(), token=f"{os.getpid()}-{time.time_ns()}")
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _write(self) -> None:
    text = json.dumps(dict(self._record, heartbeat=time.time()))
    if "://" in self.workdir:
      self.path.write_text(text)  # an object store replaces an object whole: readers never see half
      return
    # A local file is truncated then written: a reader between the two would see no holder and take
    # the lock over, so the record is written beside it and renamed into place.
    partial = self.path.with_name(self.path.name + f".{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, self.path)

  def acquire(self) -> "ObjectLock":
    current = _read_json(self.path.read_text) if self.path.exists() else None
    if current and time.time() - float(current.get("heartbeat", 0)) < self._stale_s:
      raise _busy(self.workdir, current, str(self.path))
    if current:
      logging.warning("Taking over the lock of %s: its holder (%s) stopped refreshing it %.0f s ago.",
                      self.workdir, _describe(current), time.time() - float(current.get("heartbeat", 0)))
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._write()
    time.sleep(self._settle_s)  # a run that wrote after us, having checked at the same time, wins
    back = _read_json(self.path.read_text)
    if not back or back.get("token") != self._record["token"]:
      raise _busy(self.workdir, back, str(self.path))
    self._thread = threading.Thread(target=self._refresh, daemon=True, name="workdir-lock")
    self._thread.start()
    return self

  def _refresh(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        self._write()
      except Exception as e:  # pylint: disable=broad-except  # a storage hiccup: try again next beat
        logging.warning("Could not refresh the workdir lock %s: %s", self.path, e)

  def discard(self) -> None:
    self.release()

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
      self._thread = None
      try:
        current = _read_json(self.path.read_text)
        if current and current.get("token") == self._record["token"]:
          self.path.unlink()
      except Exception:  # pylint: disable=broad-except  # left behind, it goes stale by itself
        pass


def _read_json(read) -> dict | None:
  try:
    return json.loads(read())
  except Exception:  # pylint: disable=broad-except  # empty or half-written: the holder is unnamed
    return None


def acquire(workdir: str, process_index: int = 0):
  """The lock of `workdir` for this process (WorkdirBusy if another run holds it)."""
  if "://" in workdir:
    return ObjectLock(workdir, process_index).acquire()
  return LocalLock(os.path.abspath(os.path.expanduser(workdir)), process_index).acquire()
