"""gato-serve: serves a checkpoint's policy over HTTP (Starlette on uvicorn), bound to 127.0.0.1 by default.

  gato-serve --checkpoint demo_output                       # a workdir's latest checkpoint, port 8000
  gato-serve --checkpoint demo_output/checkpoints/400 --port 0 --port_file /tmp/port --max_sessions 64
  gato-serve --checkpoint params/ --config experiments/tiny_demo.py     # exported params need the config
  gato-serve --checkpoint ckpt --mesh_shape=1,1,8           # params over a data x fsdp x tensor mesh

Sampling defaults to the checkpoint config's eval section (as gato-eval); --greedy, --temperature and
--context_length override it. SIGTERM (or Ctrl-C) stops accepting connections, lets the requests in
flight finish, and exits 0. A checkpoint or flag that cannot serve exits with one line.
"""

import os
import signal
import socket

from absl import flags, logging
import uvicorn

from gato_jax import cli_flags
from gato_jax.acting import loading, stepping
from gato_jax.acting.prompts import StepTokenizer
from gato_jax.partitioning import make_mesh
from gato_jax.serving import app as app_lib
from gato_jax.serving.engine import Engine, RequestError

_CONFIG = cli_flags.CONFIG
_MODULE_IMPORT = cli_flags.module_import_flag()
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir (its latest committed checkpoint), a "
                                  "checkpoint step directory, or exported params (with --config).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (127.0.0.1: this machine only).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to bind; 0 picks a free one (see --port_file).")
_PORT_FILE = flags.DEFINE_string("port_file", None, "Write the bound port here once the model is loaded.")
_MAX_SESSIONS = flags.DEFINE_integer("max_sessions", 64, "Sessions open at once (each holds a KV-cache slot).")
_IDLE_TIMEOUT = flags.DEFINE_float("idle_timeout_s", 600.0, "Close sessions idle this long.")
_GRACE = flags.DEFINE_integer("shutdown_grace_s", 30, "On SIGTERM, wait this long for requests in flight.")
_WARM = flags.DEFINE_list("warm_tasks", [], "Tasks whose step is compiled for every batch size at start "
                          "(no compile stall when sessions of them arrive).")
_MESH_SHAPE = flags.DEFINE_list("mesh_shape", None, "data,fsdp,tensor sizes of the mesh the params are "
                                "sharded over (default: one device).")
_SENTENCEPIECE = flags.DEFINE_string("sentencepiece_model", None, "The .model file, for tasks that observe text.")
_GREEDY = flags.DEFINE_bool("greedy", None, "Argmax actions (default: the config's eval.greedy).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sampling temperature (default: eval.temperature).")
_CONTEXT = flags.DEFINE_integer("context_length", None, "Tokens of context per session (default: as gato-eval).")
_BATCH_WAIT = flags.DEFINE_float("batch_wait_ms", 2.0, "After a request arrives, wait up to this long for the "
                                 "other open sessions' next steps, so they share one device call.")


def tokenizers(layout, options, sentencepiece_model):
  """task name -> StepTokenizer (cached), refusing unknown tasks with one line (HTTP 400)."""
  cache = {}

  def tokenizer_for(task: str) -> StepTokenizer:
    if task not in cache:
      try:
        spec = stepping.task_spec(task)
        cache[task] = StepTokenizer.for_model(options, layout, spec,
                                              stepping.text_tokenizer_for(spec, sentencepiece_model))
      except loading.LoadError as e:
        raise RequestError(str(e)) from None
    return cache[task]

  return tokenizer_for


def build_engine() -> tuple[Engine, dict]:
  """The engine over the checkpoint's model, and what /health says about it."""
  mesh = None
  if _MESH_SHAPE.value:
    data, fsdp, tensor = (int(x) for x in _MESH_SHAPE.value)
    mesh = make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor})
  config = _CONFIG.value if flags.FLAGS["config"].present else None
  loaded = loading.load(_CHECKPOINT.value, config, mesh)
  settings = stepping.acting_settings(loaded.config, greedy=_GREEDY.value, temperature=_TEMPERATURE.value,
                                      context_length=_CONTEXT.value)
  logging.info("gato-serve: %s loaded; %s", loaded.path, settings)
  name = os.path.basename(loaded.path.rstrip("/"))
  info = {"checkpoint": loaded.path, "step": int(name) if name.isdigit() else -1, "settings": settings}
  return Engine(loaded.model, loaded.layout, max_sessions=_MAX_SESSIONS.value,
                context_length=settings["context_length"], prompt_tokens=settings["prompt_tokens"],
                greedy=settings["greedy"], temperature=settings["temperature"], roll_keep=settings["roll_keep"],
                batch_wait_s=_BATCH_WAIT.value / 1e3, chunk_dtype=settings["chunk_dtype"],
                tokenizer_for=tokenizers(loaded.layout, loaded.model.options, _SENTENCEPIECE.value)), info


def main(argv) -> None:
  if len(argv) > 1:
    cli_flags.fail(f"unexpected arguments {argv[1:]}")
  cli_flags.require(_CHECKPOINT)
  cli_flags.import_modules(_MODULE_IMPORT.value)
  if _MAX_SESSIONS.value < 1:
    cli_flags.fail(f"--max_sessions must be at least 1, got {_MAX_SESSIONS.value}")
  if _MESH_SHAPE.value and len(_MESH_SHAPE.value) != 3:
    cli_flags.fail(f"--mesh_shape takes data,fsdp,tensor sizes, got {','.join(_MESH_SHAPE.value)}")
  try:
    sock = socket.create_server((_HOST.value, _PORT.value))
  except OSError as e:
    cli_flags.fail(f"cannot bind {_HOST.value}:{_PORT.value}: {e.strerror}", 1)
  try:
    engine, info = build_engine()
  except (loading.LoadError, ValueError) as e:
    cli_flags.fail(str(e), 1)
  try:
    for task in _WARM.value:
      logging.info("gato-serve: %s: %d shapes compiled (steps and re-prefills)", task, engine.warm(task))
  except RequestError as e:
    cli_flags.fail(f"--warm_tasks: {e}", 1)
  port = sock.getsockname()[1]
  if _PORT_FILE.value:
    with open(_PORT_FILE.value + ".tmp", "w") as f:
      f.write(str(port))
    os.replace(_PORT_FILE.value + ".tmp", _PORT_FILE.value)  # readers never see a half-written port
  print(f"gato-serve: serving {_CHECKPOINT.value} on http://{_HOST.value}:{port}", flush=True)
  server = uvicorn.Server(uvicorn.Config(app_lib.build_app(engine, _IDLE_TIMEOUT.value, info), log_level="warning",
                                         timeout_graceful_shutdown=_GRACE.value))
  # uvicorn re-raises the signal it shut down on once it has finished; the shutdown was graceful by
  # then, so the re-raised signal ends here and the process exits 0 instead of dying of it.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: None)
  server.run(sockets=[sock])


def run() -> None:
  cli_flags.run(main, "gato-serve")
