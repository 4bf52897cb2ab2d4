"""Issue #14, items 4 and 8, and the soak's input checks: one line and exit 2 for each bad input
(nothing written to the workdir first), a truncated TFRecord shard named by file and record, stale
`incomplete.*` directories of a killed dataset build removed by the next build, third-party caches
kept out of a read-only home."""

import glob
import os
import subprocess
import sys

import pytest

from gato_jax import cli_flags
import test_training_support as support

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": support.REPO}


def _gato_train(*args, workdir):
  return subprocess.run([sys.executable, "-m", "gato_jax.train", f"--workdir={workdir}", *args],
                        capture_output=True, text=True, env=ENV, cwd=support.REPO, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["--config=experiments/no_such_file.py"], "--config=experiments/no_such_file.py: no such file"),
    (["--config=experiments/tiny_demo.py", "--config.batch_sise=4"],
     "--config.batch_sise: experiments/tiny_demo.py has no key 'batch_sise' (did you mean batch_size"),
    (["--config=experiments/tiny_demo.py", "--config.data.mixture=no_such_task:1", "--config.data.data_dir={data}"],
     "config.data.mixture='no_such_task:1'"),
    (["--config=experiments/tiny_demo.py", "--config.data.data_dir={data}/missing"],
     "config.data.data_dir='{data}/missing' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, args, message):
  (tmp_path / "data").mkdir()
  workdir = tmp_path / "run"
  result = _gato_train(*[a.format(data=tmp_path / "data") for a in args], workdir=workdir)
  assert result.returncode == 2, result.stderr[-2000:]
  ours = [line for line in result.stderr.splitlines() if line.startswith("gato-train") or "Traceback" in line]
  assert len(ours) == 1 and message.format(data=tmp_path / "data") in ours[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(workdir / "config.json")


def test_third_party_caches_leave_the_home_directory_alone(monkeypatch):
  for variable in cli_flags.CACHE_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setenv("KERAS_HOME", "/keep/mine")
  cli_flags.isolate_caches()
  home = os.path.expanduser("~")
  assert os.environ["KERAS_HOME"] == "/keep/mine"
  for variable in ("MPLCONFIGDIR", "MESA_SHADER_CACHE_DIR", "MESA_GLSL_CACHE_DIR"):
    assert not os.environ[variable].startswith(home) and os.path.isdir(os.environ[variable])


@pytest.mark.slow
def test_library_info_lines_are_quieted_and_their_errors_kept():
  import logging  # pylint: disable=g-import-not-at-top
  def record(path, level, msg="x"):
    return logging.LogRecord("absl", level, f"/site-packages/{path}", 1, msg, None, None)
  keep = cli_flags._keep_record  # pylint: disable=protected-access
  assert not keep(record("tensorflow_datasets/core/reader.py", logging.INFO))
  assert not keep(record("seqio/dataset_providers.py", logging.INFO))
  assert not keep(record("orbax/checkpoint/checkpoint_manager.py", logging.INFO))
  assert keep(record("gato_jax/training/loop.py", logging.INFO))
  assert keep(record("seqio/dataset_providers.py", logging.WARNING, "a real warning"))
  assert not keep(record("orbax/type_handler_registry.py", logging.WARNING, "Type handler registry type X"))
  assert keep(record("orbax/checkpoint/checkpoint_manager.py", logging.ERROR))


def test_a_truncated_shard_is_named_with_its_record(tmp_path):
  from testlib import data_testing as testing  # pylint: disable=g-import-not-at-top
  from gato_jax.training import loop  # pylint: disable=g-import-not-at-top
  testing.build_tiny_data_dir(tmp_path / "data", num_episodes=(8, 2))
  shard = sorted(glob.glob(str(tmp_path / "data" / "tiny_pole" / "*" / "*train.tfrecord*")))[0]
  os.truncate(shard, os.path.getsize(shard) - 20)
  config = testing.tiny_config(tmp_path / "data", mixture="tiny_pole:1", sequence_length=64, batch_size=8)
  config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps = 40, 40, 40
  config.peak_flops_per_device = 1e9
  with pytest.raises(loop.DataLossError, match=rf"{shard} record \d+ \(.*truncated record"):
    loop.train(config, str(tmp_path / "run"))


@pytest.mark.slow
def test_a_killed_builds_incomplete_directory_is_removed_by_the_next_build(tmp_path):
  from data_pipelines import building  # pylint: disable=g-import-not-at-top
  stale = tmp_path / "cartpole" / "incomplete.ABC123_1.0.0"
  stale.mkdir(parents=True)
  (stale / "cartpole-train.tfrecord-00000-of-00001").write_bytes(b"\0" * 100)
  report = building.build("cartpole", str(tmp_path), episodes=2, validation_episodes=1, return_episodes=1)
  assert report.num_train == 2 and not stale.exists()
  assert sorted(os.listdir(tmp_path / "cartpole")) == ["1.0.0"]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["gato_jax.train", "gato_jax.evaluate"])
def test_module_import_runs_the_users_module_before_the_config_is_used(tmp_path, module):
  (tmp_path / "user_tasks.py").write_text(
      "import os\nopen(os.path.join(os.path.dirname(__file__), 'imported'), 'w').write('yes')\n"
      "raise SystemExit('user_tasks imported')\n")
  env = {**ENV, "PYTHONPATH": f"{tmp_path}:{support.REPO}"}
  result = subprocess.run([sys.executable, "-m", module, "--module_import=user_tasks",
                           "--config=tests/test_training_support.py", f"--workdir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, cwd=support.REPO, timeout=600)
  assert (tmp_path / "imported").exists() and "user_tasks imported" in result.stderr
  assert not (tmp_path / "run" / "config.json").exists()  # imported before any work
