"""Flags shared by the gato-* entry points, defined once so that any of them can be imported together,
and the start-up every entry point shares: flag errors as one line, user task modules, cache dirs."""

import difflib
import importlib
import logging as std_logging
import os
import runpy
import sys
import tempfile
import threading
import time
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py); "
                                         "override any key with --config.key=value.", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory: checkpoints, TensorBoard logs, the "
                              "resolved config and evaluation reports.")
EXIT_USAGE = 2
# Third-party caches that default to the home directory (which may be read-only on a cluster).
CACHE_VARIABLES = {"MPLCONFIGDIR": "matplotlib", "KERAS_HOME": "keras",
                   "MESA_SHADER_CACHE_DIR": "mesa_shader_cache", "MESA_GLSL_CACHE_DIR": "mesa_shader_cache"}


def module_import_flag():
  """--module_import (repeatable): modules to import before the config's data is resolved, where a
  user's own `register_control_task(...)` / SeqIO registrations live. Shared by every entry point."""
  if "module_import" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["module_import"])
  return flags.DEFINE_multi_string("module_import", [], "Modules to import first: where your own "
                                   "register_control_task(...) calls live (repeatable).")


def import_modules(names) -> None:
  for name in names:
    try:
      importlib.import_module(name)
    except ImportError as e:
      fail(f"--module_import={name}: {e}")
    except Exception as e:  # pylint: disable=broad-except  # the user's module failed: where, in one line
      frame = traceback.extract_tb(e.__traceback__)[-1]
      fail(f"--module_import={name}: importing it raised {type(e).__name__}: {_one_line(e)} "
           f"({frame.filename}:{frame.lineno})")


def require(*holders) -> None:
  """Fails with a usage message naming each required flag left unset (absl's mark_flags_as_required
  would apply to every entry point importing this module, not just the one being run)."""
  missing = [h.name for h in holders if h.value is None]
  if missing:
    raise app.UsageError(f"missing required flags: {', '.join('--' + m for m in missing)}")


def run(main, program: str) -> None:
  """app.run for an entry point: caches off the home directory, one-line flag errors, `program` as
  the name its messages start with (also under `python -m`)."""
  run.program = program
  isolate_caches()
  app.run(main, flags_parser=parse_flags)


def fail(message: str, status: int = EXIT_USAGE) -> None:
  """One line on stderr, then exit: what every bad input gets instead of a traceback. Past the flags
  (status other than 2), the exception being handled, with its causes, goes to the details file,
  and the line says where."""
  error = sys.exc_info()[1]
  if error is not None and status != EXIT_USAGE:
    write_details("".join(traceback.format_exception(error)))
  if _details["path"]:
    message += f" (details: {_details['path']})"
  print(f"{getattr(run, 'program', os.path.basename(sys.argv[0]))}: {message}", file=sys.stderr, flush=True)
  logging.flush()
  sys.exit(status)


# Library tracebacks (Orbax, TensorStore) and failed background threads: written here, not to stderr.
_details = {"dir": None, "path": None}
_details_lock = threading.Lock()


def set_details_dir(workdir: str) -> None:
  """Details go to `<workdir>/logs/error-<time>.txt` (created only when there is something to write)."""
  _details["dir"] = os.path.join(workdir, "logs")


def write_details(text: str) -> str:
  """Appends `text` to this run's details file and returns its path. Never raises: a workdir that
  cannot take it (full, unwritable) hands over to the temporary directory, and failing that the
  details are dropped (the one line must still come out)."""
  with _details_lock:
    for directory in (_details["dir"], os.path.join(tempfile.gettempdir(), f"gato_jax_logs_{os.getuid()}")):
      if directory is None:
        continue
      if _details["path"] is None or not _details["path"].startswith(directory):
        _details["path"] = os.path.join(directory, f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
      try:
        os.makedirs(directory, exist_ok=True)
        with open(_details["path"], "a") as f:
          f.write(text.rstrip("\n") + "\n\n")
        return _details["path"]
      except OSError:
        _details["dir"] = None  # this one is full or unwritable: use the next from now on
    _details["path"] = None
    return "(no details written: no writable directory)"


def _config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def config_path() -> str:
  """The --config path given on this process's command line ("" if none)."""
  return _config_path(sys.argv) or ""


def _config_keys(path: str) -> list[str]:
  """Every dotted key of the config file at `path` (for "did you mean"); [] when it does not load."""
  try:
    config = runpy.run_path(path.split(":")[0])["get_config"]()
  except Exception:  # pylint: disable=broad-except  # reported by the config flag itself
    return []
  keys, stack = [], [("", config)]
  while stack:
    prefix, node = stack.pop()
    for key, value in node.items():
      keys.append(prefix + key)
      if hasattr(value, "items"):
        stack.append((prefix + key + ".", value))
  return keys


def _one_line(error: Exception) -> str:
  """An exception's first line, with its last line too when the first only introduces a traceback."""
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  return f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _unknown_config_key(argv, name: str | None = None) -> str | None:
  """"--config.<key>: <file> has no key ... (did you mean ...)" for the first override naming a key
  the config file lacks (or for `name`), else None."""
  path = _config_path(argv)
  if not path:
    return None
  if not os.path.exists(path.split(":")[0]):
    return f"--config={path}: no such file"
  keys = _config_keys(path)
  given = [name] if name else [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  for flag in given:
    key = flag[len("config."):]
    if keys and key not in keys:
      close = difflib.get_close_matches(key, keys, n=3)
      return (f"--{flag}: {path} has no key {key!r}" + (f" (did you mean {', '.join(close)}?)" if close
                                                          else ""))
  return None


def parse_flags(argv):
  """absl's flag parsing (app.run's `flags_parser`), but a bad flag, a missing config file or a
  typo'd --config.key ends in one line and exit 2, and the config is loaded here, before any work."""
  try:
    rest = flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    fail(_unknown_config_key(argv, e.flagname) if e.flagname.startswith("config.") and
         _unknown_config_key(argv, e.flagname) else f"unknown flag --{e.flagname}")
  except Exception as e:  # pylint: disable=broad-except  # config_flags raises KeyError & co. while parsing
    fail(_unknown_config_key(argv) or _one_line(e))
  path = _config_path(argv)
  if path:
    if not os.path.exists(path.split(":")[0]):
      fail(f"--config={path}: no such file")
    try:
      CONFIG.value  # pylint: disable=pointless-statement  # loads the file and applies the overrides
    except Exception as e:  # pylint: disable=broad-except
      lines = [line for line in str(e).strip().splitlines() if line.strip()]
      fail(_unknown_config_key(argv) or f"--config={path}: {type(e).__name__}: {lines[-1] if lines else ''}")
  return rest


def isolate_caches() -> None:
  """Points unset third-party cache variables into a per-user temporary directory, so a read-only
  home directory does not break plotting, Keras or Mesa's shader cache (and no workdir is touched
  before the config has been checked)."""
  root = os.path.join(tempfile.gettempdir(), f"gato_jax_cache_{os.getuid()}")
  for variable, name in CACHE_VARIABLES.items():
    if not os.environ.get(variable):
      os.environ[variable] = os.path.join(root, name)
      os.makedirs(os.environ[variable], exist_ok=True)


QUIET_LIBRARIES = ("orbax", "clu", "seqio", "tensorflow_datasets", "tensorflow")
# Whose multi-line errors (tracebacks, asyncio's "exception was never retrieved") go to the details file.
DETAILS_LIBRARIES = QUIET_LIBRARIES + ("asyncio", "tensorstore")
# Warnings said on every run that ask nothing of the user (orbax re-registering its jax.Array handler).
QUIET_WARNINGS = ("Type handler registry type",)


def _keep_record(record) -> bool:
  libraries = tuple(f"{os.sep}{name}{os.sep}" for name in QUIET_LIBRARIES)
  ours = not any(library in record.pathname for library in libraries)
  if record.levelno < logging.converter.STANDARD_WARNING:
    return ours
  diverted = tuple(f"{os.sep}{name}{os.sep}" for name in DETAILS_LIBRARIES)
  if any(library in record.pathname for library in diverted) and (
      record.exc_info or "Traceback" in str(record.msg) or "\n" in str(record.msg)):
    # A library's traceback: kept whole in the details file, out of the way of the decisive line.
    write_details(std_logging.Formatter("%(asctime)s %(levelname)s %(pathname)s:%(lineno)d %(message)s")
                  .format(record))
    return False
  return record.levelno >= logging.converter.STANDARD_ERROR or not any(
      str(record.msg).startswith(text) for text in QUIET_WARNINGS)


def quiet_library_logs() -> None:
  """Orbax logs every save and restore, clu every report, TFDS and SeqIO every dataset they open, at INFO
  through absl, which drowns the progress lines: keep their warnings and errors only (our own INFO lines
  stay)."""
  handler = logging.get_absl_handler()
  if not getattr(handler, "_gato_quiet", False):
    handler.addFilter(_keep_record)
    handler._gato_quiet = True  # pylint: disable=protected-access
    threading.excepthook = _thread_failed
    sys.excepthook = _uncaught
    sys.unraisablehook = lambda unraisable: write_details(
        f"Exception ignored in {unraisable.object!r}:\n" + "".join(traceback.format_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)))


_LIBRARY_PATHS = ("site-packages", f"{os.sep}asyncio{os.sep}", f"{os.sep}concurrent{os.sep}",
                  f"{os.sep}threading.py")


def _uncaught(exc_type, exc_value, exc_traceback) -> None:
  """Tracebacks printed by libraries' callbacks (TensorStore's futures on a closed asyncio loop, as
  the process ends) go to the details file only; an error out of our own code gets one line too."""
  path = write_details("".join(traceback.format_exception(exc_type, exc_value, exc_traceback)))
  frames = traceback.extract_tb(exc_traceback)
  library_only = frames and all(any(part in f.filename for part in _LIBRARY_PATHS) and not any(
      f"{os.sep}{ours}{os.sep}" in f.filename for ours in ("gato_jax", "data_pipelines", "launch"))
                                for f in frames)
  if not library_only:
    print(f"{getattr(run, 'program', os.path.basename(sys.argv[0]))}: unexpected {exc_type.__name__}: "
          f"{_one_line(exc_value) if str(exc_value).strip() else ''} (details: {path})", file=sys.stderr,
          flush=True)


def _thread_failed(args) -> None:
  """A background thread's uncaught exception (an Orbax save thread): one line, the rest to details."""
  if args.exc_type is SystemExit:
    return
  path = write_details(f"Exception in thread {getattr(args.thread, 'name', '?')}:\n" + "".join(
      traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
  logging.warning("Background thread %s failed: %s: %s (details: %s)", getattr(args.thread, "name", "?"),
                  args.exc_type.__name__, str(args.exc_value).strip().splitlines()[:1], path)
