"""Pre-flight: compile the experiment for the slice on the launching machine before any pod is made.

    python -m launch.preflight --accelerator=v5e-256 [--num_slices=2] --experiment=FILE [-- gato-train flags]

Every launcher (tpu_vm.sh, the GKE JobSet, multi-slice) runs this first unless told `--skip_preflight`:
`gato-train --compile_only` with the slice's topology (launch/topology.py's table) in a fresh process,
so a config that does not compile or fit stops here, in one line, at no pod's price. Exit status is
gato-train's: 0 fits, 2 does not fit / bad topology / libtpu missing.
"""

import argparse
import os
import shlex
import subprocess
import sys

from launch import topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_HINT = "(launchers: --skip_preflight skips this check)"


def jax_topology(tpu: topology.TpuSlice) -> str:
  """The topology name JAX's compile-only devices take for a slice: `v5e:16x16`, `v4:2x2x4`."""
  return f"{tpu.generation}:{tpu.topology}"


def command(accelerator: str, experiment: str, num_slices: int = 1, train_args=(), python: str = sys.executable):
  tpu = topology.parse(accelerator)
  argv = [python, "-m", "gato_jax.train", f"--config={experiment}", "--compile_only",
          f"--topology={jax_topology(tpu)}"]
  if num_slices > 1:
    argv.append(f"--num_slices={num_slices}")
  return argv + list(train_args)


def run(accelerator: str, experiment: str, num_slices: int = 1, train_args=(), dry_run: bool = False) -> int:
  """Runs the check (or prints it when `dry_run`); returns its exit status."""
  argv = command(accelerator, experiment, num_slices, train_args)
  print(f"# pre-flight: will {experiment} fit {num_slices} x {accelerator}? compiling it here first "
        f"{SKIP_HINT}", file=sys.stderr, flush=True)
  print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
  if dry_run:
    return 0
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
      p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p))
  status = subprocess.run(argv, env=env, cwd=REPO, check=False).returncode
  if status:
    print(f"pre-flight: {experiment} did not pass the compile-only check for {num_slices} x {accelerator} "
          f"(exit {status}); nothing was launched {SKIP_HINT}", file=sys.stderr, flush=True)
  return status


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  train_args = argv[argv.index("--") + 1:] if "--" in argv else []
  ours = argv[:argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(prog="python -m launch.preflight", description=__doc__.split("\n")[0])
  parser.add_argument("--accelerator", required=True, help="v4-32, v5p-128, v5e-256, v6e-256, ...")
  parser.add_argument("--experiment", required=True, help="experiments/gato_79m.py")
  parser.add_argument("--num_slices", type=int, default=1)
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
  args = parser.parse_args(ours)
  try:
    return run(args.accelerator, args.experiment, args.num_slices, train_args, args.dry_run)
  except ValueError as e:
    print(f"launch.preflight: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
