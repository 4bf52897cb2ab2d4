"""launch/slurm --dry-run: the sbatch command, and the srun line gato.sbatch runs inside an allocation."""

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SUBMIT = REPO / "launch" / "slurm" / "submit.sh"
SBATCH = REPO / "launch" / "slurm" / "gato.sbatch"
MESH = ["--config.mesh.data=4", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"]


def _run(script, *args, env=None):
  return subprocess.run(["bash", str(script), *args], cwd=REPO, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, timeout=60)


def _commands(stdout):
  return [shlex.split(l[2:]) for l in stdout.splitlines() if l.startswith("+ ")]


def _allocation(nodelist="gpu[007-010],spare01", nodes=4, tasks_per_node=8, gpus=8):
  """The variables SLURM sets in a batch job (SLURM_STEP_* appear later, inside srun)."""
  return {"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": nodelist, "SLURM_NNODES": str(nodes),
          "SLURM_NTASKS": str(nodes * tasks_per_node),
          "SLURM_NTASKS_PER_NODE": f"{tasks_per_node}(x{nodes})", "SLURM_GPUS_ON_NODE": str(gpus)}


@pytest.mark.parametrize("per, tasks_per_node, processes", [("gpu", 8, 32), ("node", 1, 4)])
def test_submit_builds_the_sbatch_command(per, tasks_per_node, processes):
  result = _run(SUBMIT, "--nodes=4", "--gpus_per_node=8", f"--per={per}", "--experiment=gato_364m",
                "--workdir=/shared/runs/", "--partition=a100", "--time=48:00:00", "--dry-run", "--",
                *MESH, "--config.note=two words")
  assert result.returncode == 0, result.stderr
  assert f"4 nodes x 8 GPUs = 32 devices; one process per {per}: {processes} processes" in result.stdout
  (sbatch,) = _commands(result.stdout)
  script = sbatch.index(str(SBATCH))
  assert sbatch[0] == "sbatch"
  options = sbatch[1:script]
  for option in ["--nodes=4", "--gpus-per-node=8", f"--ntasks-per-node={tasks_per_node}",
                 "--partition=a100", "--time=48:00:00", f"--chdir={REPO}", "--job-name=gato_364m"]:
    assert option in options
  assert sbatch[script + 1:] == ["--experiment=experiments/gato_364m.py",
                                 "--workdir=/shared/runs/gato_364m", "--", *MESH,
                                 "--config.note=two words"]


def test_submit_refuses_a_mesh_that_does_not_cover_the_gpus():
  result = _run(SUBMIT, "--nodes=4", "--gpus_per_node=8", "--experiment=gato_364m",
                "--workdir=gs://b/runs", "--dry-run", "--", "--config.mesh.data=2",
                "--config.mesh.fsdp=8", "--config.mesh.tensor=1")
  assert result.returncode == 2
  assert "multiply to 16, but 4 nodes x 8 GPUs = 32" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--gpus_per_node=8", "--experiment=gato_364m", "--workdir=/w"], "--nodes=N is required"),
    (["--nodes=2", "--gpus_per_node=8", "--per=core", "--experiment=gato_364m", "--workdir=/w"],
     "--per must be 'gpu' or 'node'"),
    (["--nodes=2", "--gpus_per_node=8", "--experiment=gato_364m", "--workdir=runs"],
     "absolute path on a shared filesystem or a gs:// path"),
    (["--nodes=2", "--gpus_per_node=8", "--experiment=nope", "--workdir=/w"], "no experiment file"),
])
def test_submit_bad_arguments(args, message):
  result = _run(SUBMIT, *args, "--dry-run")
  assert result.returncode == 2
  assert message in result.stderr


def test_sbatch_script_runs_one_process_per_gpu_with_jax_finding_the_coordinator():
  result = _run(SBATCH, "--experiment=experiments/gato_364m.py", "--workdir=/shared/runs/gato_364m",
                "--dry-run", "--", *MESH, env=_allocation())
  assert result.returncode == 0, result.stderr
  assert "4 nodes x 8 GPUs = 32 devices; one process per GPU: 32 processes" in result.stdout
  # The same coordinator JAX's own SLURM detection derives (first node, port from the job id).
  from jax._src.clusters import slurm_cluster  # pylint: disable=g-import-not-at-top
  step_env = {**_allocation(), "SLURM_STEP_NODELIST": "gpu[007-010],spare01", "SLURM_PROCID": "5",
              "SLURM_LOCALID": "5"}
  with pytest.MonkeyPatch.context() as patch:
    for key, value in step_env.items():
      patch.setenv(key, value)
    patch.delenv("JAX_COORDINATOR_PORT", raising=False)
    assert slurm_cluster.SlurmCluster.is_env_present()
    expected = slurm_cluster.SlurmCluster.get_coordinator_address(None, None)
  assert f"# coordinator {expected} " in result.stdout
  assert expected == "gpu007:62016"
  (srun,) = _commands(result.stdout)
  assert srun[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks=32", "--ntasks-per-node=8"]
  assert srun[4:] == ["gato-train", "--config=experiments/gato_364m.py",
                      "--workdir=/shared/runs/gato_364m", *MESH]
  assert "JAX_LOCAL_DEVICE_IDS" not in result.stdout


def test_sbatch_script_one_process_per_node_sees_all_its_gpus():
  result = _run(SBATCH, "--experiment=experiments/gato_364m.py", "--workdir=gs://b/gato_364m",
                "--dry-run", env=_allocation(nodelist="node17", nodes=1, tasks_per_node=1, gpus=4))
  assert result.returncode == 0, result.stderr
  assert "one process per node, 4 GPUs each: 1 processes" in result.stdout
  assert "# JAX_LOCAL_DEVICE_IDS=0,1,2,3" in result.stdout
  assert "# coordinator node17:62016" in result.stdout
  (srun,) = _commands(result.stdout)
  assert "--ntasks=1" in srun and "--workdir=gs://b/gato_364m" in srun


@pytest.mark.parametrize("env, message", [
    ({}, "SLURM_JOB_ID is not set"),
    (_allocation(tasks_per_node=3), "--ntasks-per-node=3 with 8 GPUs per node: use 1 or 8"),
])
def test_sbatch_script_refuses_a_bad_allocation(env, message):
  clean = {k: "" for k in _allocation()}  # hide a real allocation, should the tests run inside one
  result = _run(SBATCH, "--experiment=x.py", "--workdir=/w", "--dry-run", env={**clean, **env})
  assert result.returncode == 2
  assert message in result.stderr
