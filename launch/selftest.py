"""Joins jax.distributed and checks one cross-process all-reduce: run it through a launcher before a job.

It accepts gato-train's three distributed flags, so any launcher here can start it in place of
gato-train (`python -m launch.local --num_processes=2 -- python -m launch.selftest`). With none of the
flags, `jax.distributed.initialize()` detects the cluster (TPU VM metadata, GKE, SLURM) itself. Every
process prints one JSON line and exits non-zero if the global sum is wrong.
"""

import json
import sys

from absl import app
from absl import flags
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0; None lets JAX detect the cluster.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's rank.")


def check_all_reduce() -> dict:
  """Builds a global 1-D mesh over every device and sums a global array two ways across processes."""
  num_devices = jax.device_count()
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  # Every process contributes distinct numbers (0 .. num_devices-1 over the whole job), so the sum is
  # only right if every process's data arrived. It assumes equal device counts per process, as JAX does.
  first_row = jax.process_index() * jax.local_device_count()
  local_rows = np.arange(first_row, first_row + jax.local_device_count(), dtype=np.int32)
  global_rows = jax.make_array_from_process_local_data(sharding, local_rows, (num_devices,))

  psum = jax.jit(jax.shard_map(
      lambda x: jax.lax.psum(jnp.sum(x), "data"), mesh=mesh,
      in_specs=jax.sharding.PartitionSpec("data"), out_specs=jax.sharding.PartitionSpec()))
  psum_total = int(psum(global_rows).addressable_shards[0].data)
  jit_total = int(jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))(global_rows).addressable_shards[0].data)
  expected = num_devices * (num_devices - 1) // 2
  multihost_utils.sync_global_devices("launch.selftest")
  return {
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "local_devices": jax.local_device_count(),
      "global_devices": num_devices,
      "platform": jax.devices()[0].platform,
      "psum": psum_total,
      "jit_sum": jit_total,
      "expected": expected,
      "ok": psum_total == jit_total == expected,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"launch.selftest takes no positional arguments, got {argv[1:]}")
  # CPU processes need a collectives backend to talk to each other; TPU and GPU ignore this option.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=_COORDINATOR_ADDRESS.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value)
  result = check_all_reduce()
  print(json.dumps(result, sort_keys=True), flush=True)
  jax.distributed.shutdown()
  if not result["ok"]:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
