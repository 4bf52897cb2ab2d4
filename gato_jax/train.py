"""`gato-train`: train a Gato model from an experiment config, resuming from the workdir's checkpoints.

  gato-train --config experiments/tiny_demo.py --workdir /tmp/gato_demo \\
      [--config.batch_size=64 --config.mesh.fsdp=4 --config.data.mixture=synthetic ...]

Multi-process (one process per host or per GPU), flags passed by the launchers in launch/:
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
With none of them, TPU VM slices, SLURM and Open MPI jobs are detected by jax; otherwise the job is a
single process. A process that stops heartbeating for --heartbeat_timeout_seconds makes every other
process exit with an error instead of waiting for it forever.

Exit status: 0 done; 143 preempted (SIGTERM) after saving a checkpoint, so that restart policies
(GKE JobSet, SLURM --requeue) run it again and it resumes; 2 a config that cannot run (message says
why); 3 a non-finite loss or gradient with `on_nonfinite="stop"` (message names the step and tasks).
"""

import sys

from absl import app
from absl import flags
from absl import logging

from gato_jax import cli_flags

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                                  "A peer silent this long is declared dead and the job fails.")
_INIT_TIMEOUT = flags.DEFINE_integer("initialization_timeout", 300,
                                     "Seconds to wait for every process to join.")

EXIT_PREEMPTED, EXIT_CONFIG, EXIT_NONFINITE = 143, 2, 3


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli_flags.require(_CONFIG, _WORKDIR)
  # Before anything touches a device: joining the other processes defines the device set.
  from gato_jax import partitioning  # pylint: disable=g-import-not-at-top
  partitioning.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                      heartbeat_timeout_seconds=_HEARTBEAT.value,
                                      initialization_timeout=_INIT_TIMEOUT.value)
  from gato_jax.training import loop  # pylint: disable=g-import-not-at-top
  try:
    result = loop.train(_CONFIG.value, _WORKDIR.value)
  except (partitioning.MeshConfigError, loop.ConfigError) as e:
    logging.error("%s", e)
    print(f"gato-train: {e}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)
  except loop.NonFiniteError as e:
    logging.error("%s", e)
    print(f"gato-train: {e}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE)
  if result.preempted:
    logging.warning("Preempted at step %d; checkpoint saved. Exiting with %d.", result.step, EXIT_PREEMPTED)
    sys.exit(EXIT_PREEMPTED)
  logging.info("Finished at step %d.", result.step)


def run() -> None:
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
