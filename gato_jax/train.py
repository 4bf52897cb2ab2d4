"""`gato-train`: train a Gato model from an experiment config, resuming from the workdir's checkpoints.

  gato-train --config experiments/tiny_demo.py --workdir /tmp/gato_demo \\
      [--config.batch_size=64 --config.mesh.fsdp=4 --config.data.mixture=synthetic ...]
  gato-train --module_import=my_tasks --config ... --config.data.mixture=my_task:1   (your own task)
  gato-train --config experiments/gato_1_2b.py --compile_only --topology=v5e:16x16 [--num_slices=2]
      (will it fit? the real TPU compiler on this machine: memory per chip, collectives; trains nothing)

Multi-process (one process per host or per GPU), flags passed by the launchers in launch/:
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
With none of them, TPU VM slices, SLURM and Open MPI jobs are detected by jax; otherwise the job is a
single process. A process that stops heartbeating for --heartbeat_timeout_seconds makes every other
process exit with an error instead of waiting for it forever.

One run per workdir: a second gato-train on a workdir in use exits 2 naming the holder
(gato_jax/workdir_lock.py). Library tracebacks go to <workdir>/logs/error-<time>.txt; the last line
on stderr is the decisive one and names that file.

Exit status: 0 done; 143 preempted (SIGTERM) or 130 interrupted (Ctrl-C) after saving a checkpoint
(a second Ctrl-C exits at once, without saving), so that restart policies (GKE JobSet, SLURM
--requeue) run it again and it resumes; 2 a config or flag that cannot run, or a workdir in use (one
line says why); 3 a non-finite loss or gradient with `on_nonfinite="stop"`, or
`max_consecutive_skips` of them in a row with "skip" (the message names the step and tasks); 4
checkpoints that cannot be read or written (the message names the steps; nothing good is moved);
75 a peer process died or lost contact (multi-process: restart the whole job to resume).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from gato_jax import cli_flags
from gato_jax import peer_watch
from gato_jax import stop_signals
from gato_jax import storage_errors
from gato_jax import workdir_lock

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
_MODULE_IMPORT = cli_flags.module_import_flag()
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                                  "A peer silent this long is declared dead and the job fails.")
_INIT_TIMEOUT = flags.DEFINE_integer("initialization_timeout", 300,
                                     "Seconds to wait for every process to join.")
# Compile-only (gato_jax/aot): the real TPU compiler on this machine, no TPU needed (the `tpu` extra).
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Compile the train step, acting step and "
                                  "evaluation forward for --topology, report memory per chip and "
                                  "collectives, and exit (2 if it does not fit). Trains nothing.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "--compile_only's TPU topology, e.g. v5e:16x16, "
                                "v4:2x2x1, v5p:4x4x4.")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "--compile_only: slices of --topology over DCN.")
_COMPILE_REPORT = flags.DEFINE_string("compile_report", None, "--compile_only's JSON report (default: "
                                      "<workdir>/compile_only/<topology>.json when --workdir is given).")

EXIT_PREEMPTED, EXIT_CONFIG, EXIT_NONFINITE, EXIT_CHECKPOINT, EXIT_PEER_LOST = 143, 2, 3, 4, 75


def _stop(error: Exception, status: int) -> None:
  cli_flags.fail(str(error), status)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _COMPILE_ONLY.value:
    cli_flags.require(_CONFIG, _TOPOLOGY)
    cli_flags.quiet_library_logs()
    from gato_jax.aot import cli as aot_cli  # pylint: disable=g-import-not-at-top  # entry point: compile-only path
    sys.exit(aot_cli.main(_CONFIG.value, cli_flags.config_path(), _TOPOLOGY.value, _NUM_SLICES.value,
                          _COMPILE_REPORT.value, _WORKDIR.value, cli_flags.fail))
  cli_flags.require(_CONFIG, _WORKDIR)
  cli_flags.quiet_library_logs()
  cli_flags.import_modules(_MODULE_IMPORT.value)
  # Before anything touches a device: joining the other processes defines the device set.
  from gato_jax import checkpointing, partitioning  # pylint: disable=g-import-not-at-top  # after flags
  with peer_watch.exit_on_lost_peer(_PROCESS_ID.value, _NUM_PROCESSES.value):
    partitioning.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                        heartbeat_timeout_seconds=_HEARTBEAT.value,
                                        initialization_timeout=_INIT_TIMEOUT.value)
  import jax  # pylint: disable=g-import-not-at-top  # after jax.distributed joins the peers
  try:  # before anything is written to the workdir; held until the process ends
    lock = workdir_lock.acquire(_WORKDIR.value, jax.process_index())
  except (workdir_lock.WorkdirBusy, workdir_lock.WorkdirError) as e:
    _stop(e, EXIT_CONFIG)
  cli_flags.set_details_dir(_WORKDIR.value)
  from gato_jax.training import init_from, loop, optimizer  # pylint: disable=g-import-not-at-top  # after flags
  try:  # config.evals and config.eval, and the tasks they name: a bad one is one line
    evaluators = _evaluators(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    lock.discard()
    _stop(e, EXIT_CONFIG)
  try:
    result = loop.train(_CONFIG.value, _WORKDIR.value, evaluators=evaluators)
  except (partitioning.MeshConfigError, loop.ConfigError, init_from.InitFromError,
          optimizer.FreezeError) as e:
    lock.discard()
    _stop(e, EXIT_CONFIG)
  except loop.NonFiniteError as e:
    _stop(e, EXIT_NONFINITE)
  except checkpointing.CHECKPOINT_ERRORS as e:
    _stop(e, EXIT_CHECKPOINT)
  except loop.DataLossError as e:
    _stop(e, EXIT_CONFIG)
  except loop.PeerLostError as e:
    # Skips the atexit shutdown of jax.distributed: with a peer gone it would wait for that peer's
    # barrier (~77 s) and then abort (status 134).
    logging.error("%s", e)
    print(f"gato-train: {e}", file=sys.stderr, flush=True)
    logging.flush()
    os._exit(EXIT_PEER_LOST)  # pylint: disable=protected-access
  except Exception as e:  # pylint: disable=broad-except  # last: a full disk under any writer (metrics, events)
    if not storage_errors.is_disk_full(e):
      raise
    _stop(f"writing to {_WORKDIR.value}: no space left on device ({type(e).__name__}); the last committed "
          "checkpoint is kept: free space and restart to resume from it", EXIT_CHECKPOINT)
  if result.preempted:
    status = stop_signals.exit_status(EXIT_PREEMPTED)
    logging.warning("Preempted at step %d; checkpoint saved. Exiting with %d.", result.step, status)
    sys.exit(status)
  logging.info("Finished at step %d.", result.step)


def _evaluators(config, workdir: str) -> list:
  """config.evals' in-training evaluators (gato_jax/evaluation/in_training.py); none for synthetic data,
  which would otherwise load TensorFlow for nothing."""
  if config.data.mixture == "synthetic":
    return []
  from gato_jax.evaluation import in_training  # pylint: disable=g-import-not-at-top  # TF + SeqIO: real data only
  return in_training.build(config, workdir)


def run() -> None:
  """Console-script entry point."""
  stop_signals.install("gato-train")  # first: every thread started later inherits its signal mask
  cli_flags.run(main, "gato-train")


if __name__ == "__main__":
  run()
