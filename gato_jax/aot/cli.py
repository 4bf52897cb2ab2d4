"""`gato-train --compile_only --topology=v5e:16x16 [--num_slices=2]`: compile a config's train step,
acting step and evaluation forward for a TPU topology on this machine, print what each needs per chip
and communicates, write the same as JSON, exit 2 with one line when it does not fit (MaxText's
train_compile.py, as gato-train's mode)."""

import json
import os
import re
import sys

import jax

from gato_jax import partitioning
from gato_jax.aot import check, topology

EXIT_OK, EXIT_DOES_NOT_FIT = 0, 2


def report_path(report: str | None, workdir: str | None, target: topology.Target) -> str | None:
  """--compile_report, else <workdir>/compile_only/<topology>[_<n>slices].json, else nothing."""
  if report:
    return report
  if not workdir:
    return None
  name = target.name.replace(":", "_") + (f"_{target.num_slices}slices" if target.num_slices > 1 else "")
  return os.path.join(workdir, "compile_only", f"{name}.json")


def main(config, config_path: str, topology_name: str, num_slices: int, report: str | None,
         workdir: str | None, fail) -> int:
  """Runs the check; `fail(message, status)` prints one line and exits (cli_flags.fail)."""
  # Compile-only devices come from libtpu's topology description; the process itself stays on CPU
  # (with libtpu installed and no TPU attached, JAX would otherwise try, and fail, to open a TPU).
  jax.config.update("jax_platforms", "cpu")
  try:
    target = topology.parse(topology_name, num_slices)
    fit = check.compile_for(config, target, config_name=os.path.basename(config_path.split(":")[0]))
  except (topology.TopologyError, check.DoesNotFit) as e:
    fail(str(e), EXIT_DOES_NOT_FIT)
    return EXIT_DOES_NOT_FIT
  except partitioning.MeshConfigError as e:  # its device count is the topology's, not this host's
    message = re.sub(r" \(\d+ process\(es\) x \d+ local\)", "", str(e))
    fail(f"--topology={target.label} ({target.chips} chips): {message}", EXIT_DOES_NOT_FIT)
    return EXIT_DOES_NOT_FIT
  print(check.describe(fit), flush=True)
  path = report_path(report, workdir, target)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      json.dump(fit.to_json(), f, indent=1)
    print(f"report: {path}", file=sys.stderr)
  return EXIT_OK
