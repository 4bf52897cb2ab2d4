"""Which errors are the storage's (permission, not found with its directory gone, I/O, quota, outage)
and not the data's: the classification checkpointing.py retries instead of calling a checkpoint corrupt."""

import errno

from etils import epath

# Storage errors: the storage said no or is away, which says nothing about the data (never "corrupt").
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE,
                     errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENOTCONN,
                     errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOMEDIUM,
                     errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOSPC, errno.EROFS}
_TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                     "UNAUTHENTICATED", "Permission denied", "Input/output error", "Disk quota exceeded",
                     "No space left on device", "Read-only file system")  # tensorstore / gRPC / OS texts


def _chain(error: BaseException):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def _reason(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {(lines[0] if lines else '')[:300]}"


# A collective between processes that failed is a peer's problem, never the storage's, and retrying it
# alone desynchronises the processes (the others are not retrying): it is never transient here.
_COLLECTIVE_TEXTS = ("Gloo", "CoordinationService", "coordination service", "collective")


def is_collective_error(error: BaseException) -> bool:
  return any(text in str(e) for e in _chain(error) for text in _COLLECTIVE_TEXTS)


def is_transient(error: BaseException, step_dir: epath.Path) -> bool:
  """Whether a read error is the storage's (refused, away, full) rather than "the data is bad". A
  file not found counts as the data's only when its step directory is there and can be listed."""
  if is_collective_error(error):
    return False
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
      return True
    if any(status in str(e) for status in _TRANSIENT_STATUS):
      return True
  try:
    if not step_dir.exists():
      return True
    next(iter(step_dir.iterdir()), None)  # a directory we may not list is the storage's refusal
    return False
  except OSError:
    return True


def is_disk_full(error: BaseException) -> bool:
  return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
             for e in _chain(error))
