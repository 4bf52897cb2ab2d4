"""launch/tpu_vm.sh --dry-run: the exact gcloud commands, with gato-train on every worker and no coordinator."""

import os
import pathlib
import shlex
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "tpu_vm.sh"
TPU = ["--name=gato-79m", "--zone=us-central2-b", "--project=my-proj"]
TRAIN = ["--experiment=gato_79m", "--bucket=gs://my-bucket/gato/"]


def _run(*args, cwd=REPO, tmpdir="/tmp"):
  env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmpdir)}
  return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=60)


def _commands(stdout):
  """Every `+ ...` line as its argv."""
  return [shlex.split(l[2:]) for l in stdout.splitlines() if l.startswith("+ ")]


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def _remote_gato_train(argv):
  """The gato-train argv inside an ssh --command, parsed as the worker's shell will."""
  remote = shlex.split(_flag(argv, "--command"))
  start = remote.index("gato-train")
  return remote[start:remote.index(">", start)]


def test_up_creates_installs_and_trains_on_every_worker():
  result = _run("up", *TPU, "--accelerator=v4-32", *TRAIN, "--dry-run", "--",
                "--config.data.data_dir=gs://my-bucket/tfds", "--config.run_note=it's a test")
  assert result.returncode == 0, result.stderr
  assert "16 chips (2x2x4), 4 workers x 4 chips" in result.stdout
  assert "= 4 processes" in result.stdout
  commands = _commands(result.stdout)
  gcloud = [c for c in commands if c[0] == "gcloud"]
  for argv in gcloud:
    target = argv[6].split(":")[0] if argv[4] == "scp" else argv[5]
    assert target == "gato-79m" and "--zone=us-central2-b" in argv and "--project=my-proj" in argv

  create = next(c for c in gcloud if c[4] == "create")
  assert _flag(create, "--accelerator-type") == "v4-32"
  assert _flag(create, "--version") == "tpu-ubuntu2204-base"
  scp = next(c for c in gcloud if c[4] == "scp")
  assert scp[5:7] == ["/tmp/gato-jax-gato-79m.tar.gz", "gato-79m:gato-jax.tar.gz"]
  assert scp[-1] == "--worker=all"

  ssh = [c for c in gcloud if c[4] == "ssh"]
  assert all(_flag(c, "--worker") == "all" for c in ssh)
  train = next(c for c in ssh if "gato-train" in _flag(c, "--command"))
  assert _remote_gato_train(train) == [
      "gato-train", "--config=experiments/gato_79m.py", "--workdir=gs://my-bucket/gato/gato_79m",
      "--config.data.data_dir=gs://my-bucket/tfds", "--config.run_note=it's a test"]
  # The TPU metadata gives jax.distributed its topology: no manual coordinator anywhere.
  assert "coordinator_address" not in result.stdout and "--num_processes" not in result.stdout
  # The command each worker runs is valid shell.
  for argv in ssh:
    subprocess.run(["bash", "-n", "-c", _flag(argv, "--command")], check=True)
  # create, then copy the code, then train, then follow the logs.
  order = [c[4] if c[0] == "gcloud" else c[0] for c in commands]
  assert order == ["describe", "create", "bash", "scp", "ssh", "ssh", "ssh"]


def test_setup_from_a_git_ref_clones_it_on_every_worker():
  result = _run("setup", *TPU, "--git=https://github.com/me/gato-jax.git", "--ref=v0.1",
                "--extras=tpu,envs", "--dry-run")
  assert result.returncode == 0, result.stderr
  (ssh,) = _commands(result.stdout)
  remote = _flag(ssh, "--command")
  assert "git clone --quiet https://github.com/me/gato-jax.git $HOME/gato-jax" in remote
  assert "checkout --quiet v0.1" in remote
  assert "pip install --user --quiet -e '.[tpu,envs]'" in remote
  assert _flag(ssh, "--worker") == "all"


@pytest.mark.parametrize("command, expected", [
    ("logs", "tail -n +1 -F $HOME/gato-train.log"),
    ("stop", "kill -TERM $(cat $HOME/gato-train.pid)"),
    ("delete", None),
])
def test_logs_stop_and_delete(command, expected):
  result = _run(command, *TPU, "--dry-run")
  assert result.returncode == 0, result.stderr
  (argv,) = _commands(result.stdout)
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh" if expected else "delete"]
  if expected:
    assert expected in _flag(argv, "--command")
  else:
    assert "--quiet" in argv


def test_v5e_slices_use_their_gcloud_name_and_runtime():
  result = _run("create", *TPU, "--accelerator=v5e-256", "--spot", "--dry-run")
  assert result.returncode == 0, result.stderr
  assert "64 workers" in result.stdout
  create = _commands(result.stdout)[-1]
  assert _flag(create, "--accelerator-type") == "v5litepod-256"
  assert _flag(create, "--version") == "v2-alpha-tpuv5-lite"
  assert "--spot" in create


@pytest.mark.parametrize("args, message", [
    (["train", *TPU, "--experiment=gato_79m", "--dry-run"], "--bucket=gs://BUCKET/DIR is required"),
    (["train", *TPU, "--experiment=gato_79m", "--bucket=/tmp/x", "--dry-run"], "must be a gs:// path"),
    (["train", *TPU, "--experiment=nope", "--bucket=gs://b", "--dry-run"], "no experiment file"),
    (["create", *TPU, "--accelerator=v9-8", "--dry-run"], "unknown TPU generation"),
    (["create", *TPU, "--dry-run"], "create needs --accelerator"),
    (["train", "--zone=z", "--project=p", "--dry-run"], "--name=TPU is required"),
    (["train", *TPU, "--bukket=gs://b"], "unknown flag '--bukket=gs://b'"),
    (["launch", *TPU], "unknown command 'launch'"),
])
def test_bad_arguments_are_refused_before_any_gcloud_call(args, message):
  result = _run(*args)
  assert result.returncode == 2
  assert message in result.stderr
  assert "+ gcloud" not in result.stdout


def test_help_prints_usage():
  result = _run("--help")
  assert result.returncode == 0
  assert "usage: launch/tpu_vm.sh COMMAND" in result.stdout


def test_the_copied_code_is_the_working_tree_without_ignored_files(tmp_path):
  """Runs setup's local packaging step for real (it only writes a tarball) and looks inside."""
  result = _run("setup", *TPU, "--dry-run", tmpdir=tmp_path)
  assert result.returncode == 0, result.stderr
  package = next(c for c in _commands(result.stdout) if c[0] == "bash")
  subprocess.run(package, check=True, timeout=120)
  names = tarfile.open(tmp_path / "gato-jax-gato-79m.tar.gz").getnames()
  assert "launch/tpu_vm.sh" in names and "setup.py" in names and "experiments/gato_79m.py" in names
  assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)
