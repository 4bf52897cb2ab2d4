"""Renders the GKE JobSet that runs gato-train on TPU slices (jobset.yaml.tmpl) and applies it.

  python -m launch.gke.jobset --accelerator=v5p-128 --image=REGISTRY/gato-jax:TAG \
      --experiment=gato_364m --bucket=gs://BUCKET/gato [--num_slices=2] [--dry-run] \
      [-- --config.data.data_dir=gs://BUCKET/tfds]

With --dry-run it prints the manifest (and the kubectl command it would run) and applies nothing.
Before applying, the experiment is compiled for the slices on this machine (launch/preflight.py,
`gato-train --compile_only`): a config that would not compile or fit never reaches the cluster
(--skip_preflight skips it; --dry-run prints the check instead of running it).
"""

import argparse
import dataclasses
import json
import pathlib
import re
import shlex
import shutil
import string
import subprocess
import sys

from launch import preflight, topology

TEMPLATE_PATH = pathlib.Path(__file__).with_name("jobset.yaml.tmpl")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# Pod hostnames are <name>-slice-<slice>-<host>-<5 chars> and must fit a 63-character DNS label.
_MAX_NAME_LEN = 40


@dataclasses.dataclass(frozen=True)
class JobSetSpec:
  """Everything the manifest depends on."""
  name: str
  image: str
  accelerator: str
  experiment: str  # path relative to the image's working directory (the repo root)
  workdir: str  # gs://...: checkpoints and TensorBoard logs
  run: str
  num_slices: int = 1
  namespace: str = "default"
  service_account: str = "default"
  max_restarts: int = 3
  spot: bool = False
  termination_grace_s: int = 300
  env: tuple[tuple[str, str], ...] = ()
  train_args: tuple[str, ...] = ()


def train_command(spec: JobSetSpec) -> list[str]:
  """The container's command: the same gato-train and experiment file as on a laptop.

  Multislice: a hybrid ICI x DCN mesh (partitioning.make_mesh) with data parallelism across the
  slices (one gradient all-reduce per step over DCN) and the preset's fsdp / tensor axes within
  each; train_args come after, so an explicit --config.mesh.* still wins.
  """
  mesh = []
  if spec.num_slices > 1:
    mesh = [f"--config.mesh.num_slices={spec.num_slices}", "--config.mesh.dcn_axis=data",
            f"--config.mesh.data={spec.num_slices}", "--config.mesh.fsdp=-1"]
  return ["gato-train", f"--config={spec.experiment}", f"--workdir={spec.workdir}", *mesh, *spec.train_args]


def _validate(spec: JobSetSpec, tpu: topology.TpuSlice):
  if tpu.gke_accelerator is None:
    raise ValueError(f"--accelerator={spec.accelerator}: GKE has no {tpu.generation} node pools; "
                     "use v4, v5e, v5p or v6e")
  if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", spec.name) or len(spec.name) > _MAX_NAME_LEN:
    raise ValueError(f"--name={spec.name!r} must be a DNS label of at most {_MAX_NAME_LEN} characters: "
                     "lower-case letters, digits and dashes, starting with a letter")
  if not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", spec.run):
    raise ValueError(f"--run={spec.run!r} must be a Kubernetes label value: letters, digits, - _ .")
  if not spec.workdir.startswith("gs://") or len(spec.workdir) <= len("gs://"):
    raise ValueError(f"the workdir must be in a gs:// bucket (pods have no shared disk), got "
                     f"{spec.workdir!r}")
  if spec.num_slices < 1:
    raise ValueError(f"--num_slices must be at least 1, got {spec.num_slices}")
  if spec.num_slices > 1 and tpu.hosts == 1:
    raise ValueError(f"--num_slices={spec.num_slices}: multislice needs multi-host slices, and "
                     f"{tpu.accelerator_type} is a single host")
  if spec.max_restarts < 0 or spec.termination_grace_s < 0:
    raise ValueError("--max_restarts and --termination_grace_s must not be negative")
  for key, _ in spec.env:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
      raise ValueError(f"--env {key!r}: not an environment variable name")


def render(spec: JobSetSpec) -> str:
  """The JobSet manifest as YAML text."""
  tpu = topology.parse(spec.accelerator)
  _validate(spec, tpu)
  node_selector = {
      "cloud.google.com/gke-tpu-accelerator": tpu.gke_accelerator,
      "cloud.google.com/gke-tpu-topology": tpu.topology,
  }
  if spec.spot:
    node_selector["cloud.google.com/gke-spot"] = "true"
  # JAX_PLATFORMS names the TPU so a pod that cannot see its chips fails loudly instead of training
  # on the host CPU.
  env = {"JAX_PLATFORMS": "tpu,cpu", **dict(spec.env)}
  values = {
      "name": spec.name,
      "namespace": spec.namespace,
      "run": spec.run,
      "max_restarts": spec.max_restarts,
      "num_slices": spec.num_slices,
      "hosts_per_slice": tpu.hosts,
      "service_account": spec.service_account,
      "node_selector": node_selector,
      "termination_grace_s": spec.termination_grace_s,
      "image": spec.image,
      "command": train_command(spec),
      "env": [{"name": k, "value": v} for k, v in env.items()],
      "chips_per_host": tpu.chips_per_host,
  }
  template = string.Template(TEMPLATE_PATH.read_text())
  return template.substitute({k: json.dumps(v) for k, v in values.items()})


def resolve_experiment(experiment: str) -> str:
  """`gato_79m` -> `experiments/gato_79m.py`; the file must exist in this checkout (the image's source)."""
  if "/" not in experiment and not experiment.endswith(".py"):
    experiment = f"experiments/{experiment}.py"
  if not (REPO_ROOT / experiment).is_file():
    raise ValueError(f"no experiment file {experiment!r} under {REPO_ROOT} (give a path relative to "
                     "the repo root, which is the image's working directory)")
  return experiment


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  if "--" in argv:
    split = argv.index("--")
    own, train_args = argv[:split], argv[split + 1:]
  else:
    own, train_args = argv, []
  parser = argparse.ArgumentParser(prog="python -m launch.gke.jobset", description=__doc__.split("\n")[0],
                                   epilog="Arguments after `--` go to gato-train unchanged.")
  parser.add_argument("--accelerator", required=True, help="v4-32, v5p-128, v5e-256, v6e-256, ...")
  parser.add_argument("--image", required=True, help="container image with gato-jax installed "
                      "(launch/gke/Dockerfile builds one)")
  parser.add_argument("--experiment", required=True, help="experiments/gato_79m.py or gato_79m")
  parser.add_argument("--bucket", required=True, help="gs://BUCKET/DIR; the workdir is BUCKET/DIR/RUN")
  parser.add_argument("--run", default="", help="run name (default: the experiment's); the same run "
                      "resumes from its checkpoint")
  parser.add_argument("--name", default="", help="JobSet name (default: the run name, DNS-safe)")
  parser.add_argument("--num_slices", type=int, default=1, help="slices joined over DCN (multislice)")
  parser.add_argument("--namespace", default="default")
  parser.add_argument("--service_account", default="default",
                      help="Kubernetes service account bound (Workload Identity) to bucket access")
  parser.add_argument("--max_restarts", type=int, default=3)
  parser.add_argument("--spot", action="store_true", help="schedule on spot TPU node pools")
  parser.add_argument("--termination_grace_s", type=int, default=300)
  parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="extra environment variable for gato-train (repeatable)")
  parser.add_argument("--output", default="", help="also write the manifest to this file")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print the manifest and the kubectl command; apply nothing")
  parser.add_argument("--skip_preflight", "--skip-preflight", action="store_true",
                      help="don't compile the experiment for the slices here before applying")
  return parser.parse_args(own), train_args


def spec_from_args(args: argparse.Namespace, train_args: list[str]) -> JobSetSpec:
  experiment = resolve_experiment(args.experiment)
  run = args.run or pathlib.Path(experiment).stem
  env = []
  for item in args.env:
    if "=" not in item:
      raise ValueError(f"--env {item!r}: expected KEY=VALUE")
    env.append(tuple(item.split("=", 1)))
  return JobSetSpec(
      name=args.name or re.sub(r"[^a-z0-9-]+", "-", run.lower()).strip("-")[:_MAX_NAME_LEN],
      image=args.image, accelerator=args.accelerator, experiment=experiment,
      workdir=f"{args.bucket.rstrip('/')}/{run}", run=run, num_slices=args.num_slices,
      namespace=args.namespace, service_account=args.service_account,
      max_restarts=args.max_restarts, spot=args.spot, termination_grace_s=args.termination_grace_s,
      env=tuple(env), train_args=tuple(train_args))


def main(argv: list[str] | None = None) -> int:
  args, train_args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    spec = spec_from_args(args, train_args)
    manifest = render(spec)
  except ValueError as e:
    print(f"launch.gke.jobset: {e}", file=sys.stderr)
    return 2
  if not args.skip_preflight:
    status = preflight.run(spec.accelerator, spec.experiment, spec.num_slices, spec.train_args,
                           dry_run=args.dry_run)
    if status:
      return status
  if args.output:
    pathlib.Path(args.output).write_text(manifest)
  kubectl = ["kubectl", "apply", f"--namespace={spec.namespace}", "-f", "-"]
  tpu = topology.parse(spec.accelerator)
  summary = (f"# {topology.describe(tpu)}; {spec.num_slices} slice(s) -> "
             f"{spec.num_slices * tpu.hosts} gato-train processes; workdir {spec.workdir}")
  if args.dry_run:
    print(f"# would run: {shlex.join(kubectl)}  (with the manifest below on stdin)")
    print(summary)
    print(manifest, end="")
    return 0
  if shutil.which("kubectl") is None:
    print("launch.gke.jobset: kubectl is not on PATH (gcloud components install kubectl)", file=sys.stderr)
    return 2
  print(summary, file=sys.stderr)
  print(f"+ {shlex.join(kubectl)}", file=sys.stderr)
  return subprocess.run(kubectl, input=manifest.encode(), check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
