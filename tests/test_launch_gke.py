"""launch.gke.jobset --dry-run: the JobSet manifest, parsed as YAML, for TPU node pools."""

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from launch.gke import jobset

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE = "us-docker.pkg.dev/my-proj/gato/gato-jax:abc123"


def _dry_run(capsys, *args, train_args=()):
  argv = ["--image", IMAGE, "--bucket=gs://my-bucket/gato", *args, "--dry-run"]
  if train_args:
    argv += ["--", *train_args]
  status = jobset.main(argv)
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def _pod(manifest):
  return manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("accelerator, experiment, hosts, topology, gke_accelerator", [
    ("v4-32", "gato_79m", 4, "2x2x4", "tpu-v4-podslice"),
    ("v5p-128", "gato_364m", 16, "4x4x4", "tpu-v5p-slice"),
    ("v5e-256", "gato_1_2b", 64, "16x16", "tpu-v5-lite-podslice"),
])
def test_manifest_for_each_preset_slice(capsys, accelerator, experiment, hosts, topology,
                                        gke_accelerator):
  status, out, _ = _dry_run(capsys, f"--accelerator={accelerator}", f"--experiment={experiment}",
                            train_args=["--config.data.data_dir=gs://my-bucket/tfds"])
  assert status == 0
  assert out.startswith("# would run: kubectl apply --namespace=default -f -")
  assert f"-> {hosts} gato-train processes" in out
  manifest = yaml.safe_load(out)
  assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
  assert manifest["metadata"]["name"] == experiment.replace("_", "-")
  assert (manifest["metadata"]["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"]
          == "cloud.google.com/gke-nodepool")
  (slice_job,) = manifest["spec"]["replicatedJobs"]
  assert slice_job["replicas"] == 1
  job = slice_job["template"]["spec"]
  assert job["parallelism"] == job["completions"] == hosts
  assert job["backoffLimit"] == 0 and job["completionMode"] == "Indexed"
  pod = _pod(manifest)
  assert pod["restartPolicy"] == "Never"
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": gke_accelerator,
                                 "cloud.google.com/gke-tpu-topology": topology}
  (container,) = pod["containers"]
  assert container["image"] == IMAGE
  assert container["resources"]["limits"] == {"google.com/tpu": 4}
  assert container["command"] == [
      "gato-train", f"--config=experiments/{experiment}.py",
      f"--workdir=gs://my-bucket/gato/{experiment}", "--config.data.data_dir=gs://my-bucket/tfds"]
  # GKE's TPU environment gives jax.distributed its topology: no coordinator flags, no hand-set ranks.
  assert not any("coordinator" in a or "process_id" in a for a in container["command"])
  assert {"name": "JAX_PLATFORMS", "value": "tpu,cpu"} in container["env"]


def test_multislice_spot_and_extra_env(capsys):
  status, out, _ = _dry_run(capsys, "--accelerator=v5p-128", "--experiment=experiments/gato_364m.py",
                            "--num_slices=2", "--spot", "--run=exp-7", "--name=gato-exp7",
                            "--namespace=research", "--service_account=gato-ksa", "--max_restarts=10",
                            "--env=TPU_STDERR_LOG_LEVEL=0")
  assert status == 0
  assert "2 slice(s) -> 32 gato-train processes; workdir gs://my-bucket/gato/exp-7" in out
  manifest = yaml.safe_load(out)
  assert manifest["metadata"]["namespace"] == "research"
  assert manifest["spec"]["failurePolicy"]["maxRestarts"] == 10
  assert manifest["spec"]["replicatedJobs"][0]["replicas"] == 2
  pod = _pod(manifest)
  assert pod["serviceAccountName"] == "gato-ksa"
  assert pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
  (container,) = pod["containers"]
  assert "--workdir=gs://my-bucket/gato/exp-7" in container["command"]
  assert {"name": "TPU_STDERR_LOG_LEVEL", "value": "0"} in container["env"]
  # A hybrid ICI x DCN mesh: data parallel across the 2 slices, the preset's FSDP within each.
  assert {"--config.mesh.num_slices=2", "--config.mesh.dcn_axis=data", "--config.mesh.data=2",
          "--config.mesh.fsdp=-1"} <= set(container["command"])


def test_multislice_mesh_flags_build_the_hybrid_mesh_the_slices_need():
  """The launcher's mesh flags, applied to the preset, give a mesh whose data axis spans the slices."""
  from experiments import gato_364m  # pylint: disable=g-import-not-at-top
  from gato_jax import partitioning  # pylint: disable=g-import-not-at-top
  spec = jobset.JobSetSpec(name="g", image="i", accelerator="v5p-128", experiment="experiments/gato_364m.py",
                           workdir="gs://b/w", run="r", num_slices=2)
  config = gato_364m.get_config()
  for flag in jobset.train_command(spec):
    if flag.startswith("--config.mesh."):
      key, value = flag[len("--config.mesh."):].split("=")
      config.mesh[key] = int(value) if value.lstrip("-").isdigit() else value
  devices = [FakeTpu(i, slice_index=i // 64) for i in range(128)]  # 2 slices x 64 chips
  shape = partitioning.resolve_mesh_shape(config.mesh, len(devices))
  assert shape == (2, 64, 1)
  ici, dcn = partitioning.hybrid_shapes(shape, config.mesh.num_slices, config.mesh.dcn_axis)
  grid = partitioning.hybrid_device_array(ici, dcn, devices)
  assert [{d.slice_index for d in row.flat} for row in grid] == [{0}, {1}]


class FakeTpu:
  """A device as mesh_utils sees it: id, slice_index, process_index, platform."""

  def __init__(self, i, slice_index):
    self.id, self.slice_index, self.process_index = i, slice_index, i // 4
    self.platform, self.device_kind = "cpu", "fake"

  def __repr__(self):
    return f"FakeTpu({self.id}, slice {self.slice_index})"


@pytest.mark.parametrize("args, message", [
    (["--accelerator=v3-32", "--experiment=gato_79m"], "GKE has no v3 node pools"),
    (["--accelerator=v5e-8", "--experiment=gato_79m", "--num_slices=2"], "multislice needs multi-host"),
    (["--accelerator=v4-32", "--experiment=nope"], "no experiment file 'experiments/nope.py'"),
    (["--accelerator=v4-32", "--experiment=gato_79m", "--name=Gato_79M"], "must be a DNS label"),
    (["--accelerator=v4-32", "--experiment=gato_79m", "--env=NOVALUE"], "expected KEY=VALUE"),
    (["--accelerator=v4-3", "--experiment=gato_79m"], "must be even"),
])
def test_bad_arguments_name_the_problem(capsys, args, message):
  status, out, err = _dry_run(capsys, *args)
  assert status == 2
  assert message in err
  assert out == ""


def test_workdir_must_be_in_a_bucket(capsys):
  status = jobset.main(["--image", IMAGE, "--bucket=/local/runs", "--accelerator=v4-32",
                        "--experiment=gato_79m", "--dry-run"])
  assert status == 2
  assert "must be in a gs:// bucket" in capsys.readouterr().err


def test_cli_dry_run_and_output_file(tmp_path):
  out_file = tmp_path / "jobset.yaml"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  result = subprocess.run(
      [sys.executable, "-m", "launch.gke.jobset", "--accelerator=v4-32", f"--image={IMAGE}",
       "--experiment=gato_79m", "--bucket=gs://my-bucket/gato", f"--output={out_file}", "--dry-run"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert yaml.safe_load(out_file.read_text()) == yaml.safe_load(result.stdout)
