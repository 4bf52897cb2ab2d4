"""`gato-data inspect --source=...` (like import; the positional kept), `gato-data list --imported /
--domain=`, and a data_dir left with datasets only (no TFDS download folder) after build and import."""

import os

from absl import flags
from absl.testing import flagsaver
import pytest

import data_pipelines as dp
from data_pipelines import cli as data_cli
from testlib import foreign_fixtures as fixtures


@pytest.fixture(autouse=True)
def parsed_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["gato-data"])
  yield


def test_inspect_import_and_list_the_imported(tmp_path, capsys):
  path = fixtures.write_rlds_fixture(str(tmp_path / "src"), name="cli_oxe", num_episodes=3)
  data_dir = tmp_path / "data"
  capsys.readouterr()  # the fixture writer's TFDS prints
  with flagsaver.flagsaver(source=path, image_size=["32", "32"], name="arm"):
    assert data_cli.main(["gato-data", "inspect"]) == 0
  flagged = capsys.readouterr().out
  assert "task arm:" in flagged and "(32, 32, 3) via resize" in flagged
  with flagsaver.flagsaver(image_size=["32", "32"], name="arm"):
    assert data_cli.main(["gato-data", "inspect", path]) == 0  # the positional spelling
  assert capsys.readouterr().out == flagged
  with pytest.raises(SystemExit) as exit_info:
    data_cli.main(["gato-data", "inspect"])
  assert exit_info.value.code == 2

  with flagsaver.flagsaver(format="rlds", source=path, name="arm", data_dir=str(data_dir), image_size=["32", "32"]):
    assert data_cli.main(["gato-data", "import"]) == 0
  out = capsys.readouterr().out
  assert "arm: linked in place" in out and "2 train + 1 validation episodes checked" in out
  dp.build("mountaincar", str(data_dir), episodes=1, validation_episodes=1, return_episodes=2)
  assert sorted(os.listdir(data_dir)) == ["arm", "mountaincar"]  # no downloads/extracted left behind

  with flagsaver.flagsaver(data_dir=str(data_dir), imported=True):
    assert data_cli.main(["gato-data", "list"]) == 0
  rows = capsys.readouterr().out.strip().splitlines()
  assert len(rows) == 2 and rows[0].startswith("name") and rows[1].split()[:4] == ["arm", "control", "-", "linked"]
  with flagsaver.flagsaver(data_dir=str(data_dir), domain="classic_control"):
    assert data_cli.main(["gato-data", "list"]) == 0
  names = [r.split()[0] for r in capsys.readouterr().out.strip().splitlines()[1:]]
  assert "mountaincar" in names and "cartpole" in names and "arm" not in names and "metaworld_reach" not in names
