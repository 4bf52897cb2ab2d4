"""`gato-data list` and `gato-data build`: the absl app in-process, and once as a real subprocess."""

import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
from absl import app
import pytest
import tensorflow_datasets as tfds

import data_pipelines as dp
from data_pipelines import cli as data_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def parsed_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["gato-data"])
  yield


def test_build_then_refuse_then_overwrite(tmp_path, capsys):
  common = dict(dataset=["cartpole", "mountaincar"], data_dir=str(tmp_path), episodes=2,
                validation_episodes=1, return_episodes=2)
  with flagsaver.flagsaver(**common):
    assert data_cli.main(["gato-data", "build"]) == 0
  out = capsys.readouterr().out
  assert "cartpole: 2 train + 1 validation examples" in out and "mountaincar: 2 train" in out
  with flagsaver.flagsaver(**common, seed=3):
    assert data_cli.main(["gato-data", "build"]) == 1  # both exist: refused, nothing rebuilt
  assert out.count("FAILED") == 0 and capsys.readouterr().out.count("FAILED: dataset") == 2
  assert tfds.builder("cartpole", data_dir=str(tmp_path)).info.metadata["build_seed"] == 0
  with flagsaver.flagsaver(**{**common, "dataset": ["cartpole"]}, seed=3, overwrite=True):
    assert data_cli.main(["gato-data", "build"]) == 0
  assert tfds.builder("cartpole", data_dir=str(tmp_path)).info.metadata["build_seed"] == 3


def test_data_dir_and_vocab_size_come_from_the_config(tmp_path):
  from experiments import tiny_demo
  config = tiny_demo.get_config()
  config.data.data_dir = str(tmp_path / "from_config")
  with flagsaver.flagsaver(config=config):
    assert data_cli._data_dir() == str(tmp_path / "from_config")
    assert data_cli._vocab_size() == config.vocab.text_vocab_size
  with flagsaver.flagsaver(config=config, data_dir=str(tmp_path), vocab_size=300):
    assert data_cli._data_dir() == str(tmp_path) and data_cli._vocab_size() == 300


def test_bad_commands_are_usage_errors():
  with pytest.raises(app.UsageError, match="`list`, `build`, `inspect --source=SOURCE` or `import`"):
    data_cli.main(["gato-data", "make"])
  with pytest.raises(SystemExit) as exit_info:  # one line on stderr, exit 2
    data_cli.main(["gato-data", "import"])
  assert exit_info.value.code == 2
  with flagsaver.flagsaver(dataset=["cartpol"]):
    with pytest.raises(app.UsageError, match=r"unknown datasets \['cartpol'\]"):
      data_cli.main(["gato-data", "build"])
  with flagsaver.flagsaver(dataset=[]):
    with pytest.raises(app.UsageError, match="--dataset"):
      data_cli.main(["gato-data", "build"])


def test_list_runs_as_a_program(tmp_path):
  dp.build("pendulum", str(tmp_path), episodes=1, validation_episodes=1, return_episodes=2)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
  result = subprocess.run([sys.executable, "-m", "data_pipelines.cli", "list", f"--data_dir={tmp_path}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=True)
  lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
  builtin = {"cartpole", "pendulum", "mountaincar", "lunarlander", "babyai_gotoredball",
             "babyai_gotoredball_image", "babyai_gotolocal", "babyai_pickuploc", "babyai_opendoor",
             "babyai_putnextlocal", "metaworld_reach", "metaworld_push", "metaworld_drawer_open",
             "metaworld_button_press", "text", "captions", "sentencepiece"}
  assert builtin <= set(lines)  # tasks other tests registered in this process are not in the program
  assert "built (1+1)" in lines["pendulum"] and "built" not in lines["cartpole"]


def test_readme_example_registers_a_task_that_gato_data_builds(forget_new_datasets, tmp_path, monkeypatch,
                                                             capsys):
  readme = open(os.path.join(ROOT, "data_pipelines", "README.md")).read()
  example = readme.split("```python\n# my_tasks.py\n", 1)[1].split("```", 1)[0]
  (tmp_path / "my_readme_tasks.py").write_text(example)
  monkeypatch.syspath_prepend(str(tmp_path))
  with flagsaver.flagsaver(module_import=["my_readme_tasks"], dataset=["acrobot"],
                           data_dir=str(tmp_path / "data"), episodes=3, return_episodes=3):
    assert data_cli.main(["gato-data", "build"]) == 0
  assert "acrobot: 3 train + 1 validation examples" in capsys.readouterr().out
  meta = tfds.builder("acrobot", data_dir=str(tmp_path / "data")).info.metadata
  assert meta["expert_return"] > -200 > meta["random_return"]
