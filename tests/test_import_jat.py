"""JAT layout: configs written by Hugging Face `datasets` -> inferred mapping -> TFDS datasets ->
SeqIO tasks -> a few training steps in a mixture with a built-in task; bad rows are named."""

import os

import pytest

pytest.importorskip("datasets")
tfds = pytest.importorskip("tensorflow_datasets")

from data_pipelines import importers  # pylint: disable=g-import-not-at-top
from data_pipelines.importers import jat  # pylint: disable=g-import-not-at-top
from gato_jax.data import sources  # pylint: disable=g-import-not-at-top
from gato_jax.episodes import EpisodeError  # pylint: disable=g-import-not-at-top
from testlib import foreign_fixtures as fixtures  # pylint: disable=g-import-not-at-top
import import_support  # pylint: disable=g-import-not-at-top

NAMES = {"atari-pong": "jat_pong", "mujoco-hopper": "jat_hopper", "babyai-goto": "jat_babyai", "oscar": "jat_oscar",
         "conceptual-captions": "jat_captions"}


@pytest.fixture(scope="module", name="jat_source")
def fixture_jat_source(tmp_path_factory):
  return fixtures.write_jat_fixture(str(tmp_path_factory.mktemp("jat")))


def test_inferred_mappings_follow_the_jat_columns(jat_source):
  text = jat.inspect(jat_source, "atari-pong")
  print(text)
  assert "observation/image" in text and "(96, 96, 3) via pad, channels last" in text
  assert "discrete_actions" in text and "in [0, [6])" in text
  hopper = jat.infer_mapping(jat.load_split(jat_source, "mujoco-hopper", "train"))
  spec = hopper.task_spec("jat_hopper")
  assert spec.observation["continuous"].shape == (11,)
  assert spec.action.kind == "continuous" and spec.action.low == (-1.0,) * 3 and not hopper.action.clip
  babyai = jat.infer_mapping(jat.load_split(jat_source, "babyai-goto", "train")).task_spec("jat_babyai")
  assert babyai.observation["text"].modality == "text" and babyai.action.num_values[0] <= 7
  assert babyai.observation["discrete"].shape == (20,) and babyai.observation["discrete"].num_values <= 11
  # Ranges come from every row, not only the scanned ones: the action space covers the last row's actions.
  import datasets  # pylint: disable=g-import-not-at-top
  rows = datasets.Dataset.from_dict({"continuous_observations": [[[0.0, 1.0]] * 2, [[2.0, -1.0]] * 3],
                                     "discrete_actions": [[0, 1], [2, 9, 4]], "rewards": [[0.0] * 2, [1.0] * 3]})
  assert jat.infer_mapping(rows, scan_rows=1).action.num_values == (10,)
  # Overrides: Atari's full action set, a 80x80 centre crop instead of the 96x96 pad.
  pong = jat.infer_mapping(jat.load_split(jat_source, "atari-pong", "train"),
                           {"action": {"num_values": [18]}, "image_size": [80, 80], "image_policy": "center_crop"})
  assert pong.task_spec("p").action.num_values == (18,)
  assert pong.observation["image"].shape == (80, 80, 3) and pong.observation["image"].image_policy == "center_crop"
  assert "text" in jat.inspect(jat_source, "oscar") and "captions" in jat.inspect(jat_source, "conceptual-captions")
  # What `gato-data inspect SOURCE` prints: every config of the folder.
  assert importers.detect_format(jat_source) == "jat"
  assert all(f"config {c}:" in importers.inspect(jat_source) for c in fixtures.JAT_CONFIGS)


@pytest.mark.slow
def test_every_config_imports_and_trains_mixed_with_a_builtin(jat_source, tmp_path):
  data_dir = tmp_path / "data"
  refs = import_support.base_data_dir(data_dir)
  for config, name in NAMES.items():
    builder = jat.import_jat(jat_source, config, name, str(data_dir),
                             image_size=(32, 32) if config == "conceptual-captions" else None,
                             mapping={"image_size": [48, 48]} if config == "atari-pong" else None)
    assert builder.info.splits["train"].num_examples == 4 and builder.info.splits["validation"].num_examples == 2
    assert sources.dataset_exists(name, str(data_dir))
  metadata = tfds.builder_from_directory(
      os.path.join(data_dir, "jat_pong", "1.0.0")).info.metadata
  assert metadata["kind"] == "control" and metadata["domain"] == "jat" and metadata["task_spec"]["name"] == "jat_pong"
  assert metadata["task_spec"]["observation"]["image"]["shape"] == [48, 48, 3]
  found = sources.discover_datasets(str(data_dir))  # kind, TaskSpec and domain from each one's metadata
  assert {n: found[n].kind for n in NAMES.values()} == {
      "jat_pong": "control", "jat_hopper": "control", "jat_babyai": "control", "jat_oscar": "text",
      "jat_captions": "captions"}
  assert found["jat_pong"].domain == "jat" and found["jat_pong"].spec.observation["image"].shape == (48, 48, 3)
  refs += [found[n] for n in NAMES.values()]
  import_support.train_a_few_steps(
      data_dir, tmp_path / "work", refs, "jat_pong:1,jat_hopper:1,jat_babyai:1,jat_oscar:1,jat_captions:1,cartpole:1",
      image_tokens=-1)


def test_a_bad_row_is_named_and_nothing_is_left_behind(tmp_path):
  source = fixtures.write_jat_fixture(str(tmp_path / "bad"), corrupt=(2, 4))
  data_dir = tmp_path / "data"
  with pytest.raises(EpisodeError, match=r"dataset 'bad_hopper'.*episode train row 2, step 4: "
                     r"field 'observation/continuous': non-finite"):
    jat.import_jat(source, "mujoco-hopper", "bad_hopper", str(data_dir))
  assert not sources.dataset_exists("bad_hopper", str(data_dir))
  assert not (data_dir / "bad_hopper").exists() and not (data_dir / "downloads").exists()


def test_a_row_whose_columns_disagree_names_the_column_and_bounds_are_per_element(tmp_path):
  """99 actions for 100 observations: the error names the row and the column. A 2-D action whose second
  element alone leaves [-1, 1] keeps [-1, 1] for the first."""
  import datasets  # pylint: disable=g-import-not-at-top
  from data_pipelines.importers import writer  # pylint: disable=g-import-not-at-top
  steps = [100, 100, 100]
  actions = [[[0.05 * (t % 2), 3.0 * (t % 3 == 0)] for t in range(n)] for n in (100, 99, 100)]
  rows = datasets.Dataset.from_dict({"continuous_observations": [[[0.0, 1.0]] * n for n in steps],
                                     "continuous_actions": actions, "rewards": [[0.0] * n for n in steps]})
  os.makedirs(tmp_path / "src" / "cfg")
  rows.to_parquet(str(tmp_path / "src" / "cfg" / "train-00000-of-00001.parquet"))
  mapping = jat.infer_mapping(rows)
  assert mapping.action.low == (-1.0, 0.0) and mapping.action.high == (1.0, 3.0) and mapping.action.clip
  with pytest.raises(writer.ForeignDataError, match=r"^dataset 'short', episode train row 1: cannot map it: "
                     r"field 'continuous_actions' has 99 steps, expected 100"):
    jat.import_jat(str(tmp_path / "src"), "cfg", "short", str(tmp_path / "data"))
  assert not sources.dataset_exists("short", str(tmp_path / "data"))
