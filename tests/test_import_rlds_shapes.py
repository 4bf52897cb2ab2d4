"""RLDS as real Open X-Embodiment datasets have it (#21): scalar bool / float64 fields, a camera of
undeclared size whose frames change size, a gripper action outside [-1, 1]; every episode checked at
import (a NaN past the first few is refused, named by its index in the split), and the streaming
check's failure as one line."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import importers
from data_pipelines.importers import rlds
from gato_jax.data import foreign, readers, sources
from gato_jax.episodes import EpisodeError
from testlib import foreign_fixtures as fixtures


@pytest.fixture(scope="module", name="wild")
def fixture_wild(tmp_path_factory):
  return fixtures.write_rlds_fixture(str(tmp_path_factory.mktemp("wild")), name="wild_oxe", num_episodes=4,
                                     wild=True)


def test_scalar_bool_float64_and_unsized_images_are_inferred(wild):
  mapping = rlds.infer_mapping(tfds.builder_from_directory(wild))
  text = importers.inspect(wild)
  print(text)
  gripper, height = mapping.observation["gripper_closed"], mapping.observation["height"]
  assert (gripper.modality, gripper.shape, gripper.num_values) == ("discrete", (), 2)
  assert (height.modality, height.shape) == ("continuous", ()) and mapping.observation["joints"].shape == (7,)
  side = mapping.observation["side_image"]  # the first frame is 40x52: rounded up, resized per frame
  assert side.shape == (48, 64, 3) and side.image_policy == "resize"
  # Per element: six arm deltas within +-0.05 get [-1, 1]; the gripper, seen in [0, 2], gets its own range.
  assert mapping.action.low == (-1.0,) * 6 + (0.0,) and mapping.action.high == (1.0,) * 6 + (2.0,)
  assert mapping.action.clip and "in [[-1, -1, -1, -1, -1, -1, 0], [1, 1, 1, 1, 1, 1, 2]] (clipped)" in text


@pytest.mark.parametrize("overrides", [{"image_size": [32, 32]},
                                       {"image_size": [48, 48], "image_policy": "center_crop"}])
def test_wild_shapes_import_and_read(wild, tmp_path, overrides):
  data_dir = str(tmp_path / "data")
  rlds.import_rlds(wild, "wild", data_dir, mapping=overrides)
  ref = sources.discover_datasets(data_dir)["wild"]
  assert ref.link["checked_episodes"] == {"train": 3, "validation": 1}
  size = tuple(overrides["image_size"])
  for example in foreign.make_source(ref, data_dir).get_dataset("train", shuffle=False):
    observation = example["steps"]["observation"]
    assert observation["side_image"].shape[1:] == size + (3,) and observation["image"].shape[1:] == size + (3,)
    assert observation["gripper_closed"].dtype == tf.int32 and observation["gripper_closed"].shape.rank == 1
    assert observation["height"].dtype == tf.float32 and observation["joints"].shape[1:] == (7,)
    np.testing.assert_array_equal(observation["gripper_closed"].numpy()[:2], [0, 1])
    assert float(tf.reduce_max(example["steps"]["action"][:, 6])) == 2.0


def test_every_episode_is_checked_at_import_and_named_by_its_index(tmp_path):
  data_dir = str(tmp_path / "data")
  late = fixtures.write_rlds_fixture(str(tmp_path / "late"), name="late", num_episodes=10, corrupt=(9, 1))
  with pytest.raises(EpisodeError) as error:
    rlds.import_rlds(late, "late", data_dir, mapping={"image_size": [32, 32]})
  message = str(error.value)
  assert "\n" not in message and "tfrecord" not in message and "assertion" not in message
  match = re.fullmatch(r"dataset 'late' \(RLDS .*\): task 'late', episode (\d+) of 'train', step 1: field "
                       r"'observation/state': non-finite value \(NaN or inf\); expected finite floats", message)
  assert match, message
  # The index is the episode's position in the TFDS split (TFDS shuffles records when it writes): the
  # slice it names holds the episode the fixture corrupted, the 10th generated, past any first-N check.
  index = int(match.group(1))
  bad = next(iter(tfds.builder_from_directory(late).as_dataset(split=f"train[{index}:{index + 1}]")))
  assert bad["episode_metadata"]["file_path"].numpy() == b"/robot/episode_9.npy"
  assert not os.path.exists(sources.link_path(data_dir, "late")) and "late" not in sources.discover_datasets(data_dir)
  action = fixtures.write_rlds_fixture(str(tmp_path / "act"), name="act", num_episodes=3, corrupt=(1, 2, "action"))
  with pytest.raises(EpisodeError, match=r"episode \d of 'train', step 2: field 'action': \[nan, "):
    rlds.import_rlds(action, "act", data_dir, mapping={"image_size": [32, 32]})


def test_the_streaming_check_fails_in_one_line(tmp_path):
  """Linked with its episodes unchecked (check_episodes=0): training's in-graph check names the episode
  by index, step and field, in one line without tf.data's prefix and the Python traceback."""
  data_dir = str(tmp_path / "data")
  path = fixtures.write_rlds_fixture(str(tmp_path / "s"), name="stream", num_episodes=6, corrupt=(4, 2),
                                     num_shards=2)
  rlds.import_rlds(path, "stream", data_dir, mapping={"image_size": [32, 32]}, check_episodes=0)
  source = foreign.make_source(sources.discover_datasets(data_dir)["stream"], data_dir)
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    for _ in source.get_dataset("train", shuffle=False):
      pass
  line = readers.malformed_episode_line(error.value)
  match = re.fullmatch(r"malformed episode: dataset stream, split train, episode (\d+), step 2: field "
                       r"'observation/state': non-finite value \(NaN or inf\); expected finite floats", line)
  assert match, line
  index = int(match.group(1))  # across two files: the offset of the second is added
  bad = next(iter(tfds.builder_from_directory(path).as_dataset(split=f"train[{index}:{index + 1}]")))
  assert bad["episode_metadata"]["file_path"].numpy() == b"/robot/episode_4.npy"
  assert readers.malformed_episode_line(ValueError("something else")) is None
