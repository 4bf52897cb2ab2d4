"""RLDS / Open X-Embodiment: an OXE-shaped dataset written with TFDS's RLDS helpers -> inferred mapping
-> linked in place (no copy) -> discovered -> SeqIO task, sharded by file -> a few training steps in a
mixture with a built-in task; malformed episodes are named and a failed import links nothing."""

import os
import re

from absl import flags
import numpy as np
import pytest
import seqio
import tensorflow as tf

from data_pipelines import cli, importers
from data_pipelines.importers import rlds
from gato_jax.data import foreign, sources, tasks
from testlib import data_testing as testing
from testlib import foreign_fixtures as fixtures
import import_support


@pytest.fixture(scope="module", name="oxe")
def fixture_oxe(tmp_path_factory):
  return fixtures.write_rlds_fixture(str(tmp_path_factory.mktemp("oxe")), num_episodes=6, num_shards=2)


def test_inferred_mapping_of_an_oxe_dataset(oxe):
  text = rlds.inspect(os.path.dirname(os.path.dirname(oxe)))  # the dataset folder: its version is found
  print(text)
  assert importers.detect_format(oxe) == "rlds" and importers.inspect(oxe) == text
  assert rlds.resolve_version_dir(os.path.relpath(oxe)) == oxe  # the link never depends on the cwd
  for line in ("observation/image ", "observation/wrist_image", "observation/state",
               "observation/language_instruction", "dropped  language_embedding"):
    assert line in text
  mapping = rlds.infer_mapping(rlds.tfds.builder_from_directory(oxe))
  spec = mapping.task_spec("oxe_fixture")
  assert spec.observation["image"].shape == (256, 256, 3) and spec.observation["wrist_image"].shape == (128, 128, 3)
  assert spec.observation["language_instruction"].modality == "text"
  assert spec.action.kind == "continuous" and spec.action.shape == (7,) and spec.action.low == (-1.0,) * 7
  assert mapping.last_step == "drop"
  small = mapping.with_overrides({"image_size": [224, 224], "observation": {"wrist_image": None}})
  assert small.observation["image"].shape == (224, 224, 3) and "wrist_image" not in small.observation
  assert small.dropped["observation/wrist_image"] == "dropped by the user"


@pytest.mark.slow
def test_linked_in_place_discovered_sharded_and_trained(oxe, tmp_path):
  data_dir = str(tmp_path / "data")
  refs = import_support.base_data_dir(data_dir)
  link = rlds.import_rlds(oxe, "oxe_fixture", data_dir, mapping={"image_size": [32, 32]})
  assert link == os.path.join(data_dir, "oxe_fixture", "gato_source.json")
  assert not tf.io.gfile.glob(os.path.join(data_dir, "oxe_fixture", "*.tfrecord*"))  # nothing copied
  found = sources.discover_datasets(data_dir)
  ref = found["oxe_fixture"]
  assert ref.kind == "control" and ref.link["path"] == oxe and ref.spec.observation["image"].shape == (32, 32, 3)
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["gato-data"])
  assert re.search(r"\noxe_fixture +control +- +linked in place +rlds dataset", cli.list_datasets(data_dir))

  source = foreign.make_source(ref, data_dir)
  assert len(source.list_shards("train")) == 2  # train[:5] spans both files; validation is episode 6
  ids = []
  for index in range(2):
    ds = source.get_dataset("train", shuffle=False, shard_info=seqio.ShardInfo(index, 2))
    ids.append([int(ex["episode_id"]) for ex in ds])
  assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1]) and len(ids[0]) + len(ids[1]) == 5
  episode = next(iter(source.get_dataset("train", shuffle=False)))
  steps = episode["steps"]
  assert steps["observation"]["image"].dtype == tf.uint8 and steps["observation"]["image"].shape[1:] == (32, 32, 3)
  assert bool(steps["is_last"][-1]) and not bool(steps["is_last"][0]) and bool(steps["is_first"][0])

  refs.append(ref)
  config = testing.tiny_config(data_dir, mixture="oxe_fixture:2,cartpole:1", sequence_length=96)
  example = next(iter(tasks.make_tasks(config, refs)["oxe_fixture"].get_dataset(
      tasks.task_feature_lengths(96), "train", shuffle=False)))
  assert example["tokens"].shape == (97,) and int(tf.reduce_sum(tf.cast(example["patches"][..., 0] >= 0, tf.int32))) > 0
  import_support.train_a_few_steps(data_dir, tmp_path / "work", refs, "oxe_fixture:2,cartpole:1", image_tokens=-1)


def test_malformed_episodes_are_named(tmp_path):
  # Among the first episodes: the import reads them through the mapping and refuses to link.
  bad_first = fixtures.write_rlds_fixture(str(tmp_path / "a"), name="bad_first", corrupt=(0, 2))
  data_dir = str(tmp_path / "data")
  with pytest.raises(ValueError, match=r"^dataset 'oxe_bad' \(RLDS .*\): task 'oxe_bad', episode \d of 'train', "
                     r"step 2: field 'observation/state': non-finite"):
    rlds.import_rlds(bad_first, "oxe_bad", data_dir, splits={"train": "train[:1]", "validation": "train[1:]"},
                     mapping={"image_size": [32, 32]})
  assert not os.path.exists(sources.link_path(data_dir, "oxe_bad")) and "oxe_bad" not in sources.discover_datasets(data_dir)
  # Later: reading it stops on that episode, naming dataset, split, step and field.
  bad_later = fixtures.write_rlds_fixture(str(tmp_path / "b"), name="bad_later", corrupt=(3, 1))
  rlds.import_rlds(bad_later, "oxe_later", data_dir, mapping={"image_size": [32, 32]}, check_episodes=0)
  source = foreign.make_source(sources.discover_datasets(data_dir)["oxe_later"], data_dir)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"malformed episode: dataset oxe_later, split train, "
                     r"episode \d, step 1: field 'observation/state': non-finite"):
    for _ in source.get_dataset("train", shuffle=False):
      pass


def test_a_mapping_that_reads_a_missing_field_is_refused(oxe, tmp_path):
  with pytest.raises(ValueError, match=r"dataset 'oxe_wrong': the mapping reads \['observation/missing'\], "
                     r"which the RLDS dataset at .* does not have; its step fields: \['action', "):
    rlds.import_rlds(oxe, "oxe_wrong", str(tmp_path), mapping={"action": {"sources": ["observation/missing"]}})
  assert not os.path.exists(sources.link_path(str(tmp_path), "oxe_wrong"))


def test_image_policies():
  """OXE's 256x256 / 224x224 and JAT's 84x84x4 frames: crop / pad centred (as TF's
  resize_with_crop_or_pad), resize bilinear; encoded frames of any size decoded one by one."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from gato_jax import map_numpy, mapping as mapping_lib  # pylint: disable=g-import-not-at-top
  oxe = mapping_lib.field_for(mapping_lib.Leaf("observation/image", "uint8", (224, 224, 3)))
  assert oxe.shape == (224, 224, 3) and oxe.channels == "rgb"  # already whole patches: kept as is
  atari = mapping_lib.field_for(mapping_lib.Leaf("image_observations", "uint8", (84, 84, 4)))
  assert atari.shape == (96, 96, 3) and atari.image_policy == "pad" and atari.channels == "last"
  frames = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
  for policy, size in (("pad", (96, 96)), ("center_crop", (80, 64)), ("resize", (48, 48))):
    field = mapping_lib.FieldMap("x", "image", size + (3,), image_policy=policy, channels="last")
    numpy_out = map_numpy.map_image(frames, field)
    tf_out = tf.image.resize_with_crop_or_pad(tf.constant(frames[..., 3:]), *size).numpy()
    assert numpy_out.shape == (3,) + size + (3,) and numpy_out.dtype == np.uint8
    np.testing.assert_array_equal(numpy_out[..., 0], numpy_out[..., 2])  # the newest frame, as gray
    if policy != "resize":
      np.testing.assert_array_equal(numpy_out[..., :1], tf_out)
  np.testing.assert_array_equal(map_numpy.map_image(frames, mapping_lib.FieldMap(
      "x", "image", (96, 96, 3), image_policy="pad", channels="last"))[:, 6:90, 6:90, 1], frames[..., 3])
  encoded = []
  for shape in ((20, 40, 3), (40, 20, 3)):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, 7, np.uint8)).save(buffer, format="PNG")
    encoded.append(buffer.getvalue())
  out = map_numpy.map_image(np.array(encoded, object), mapping_lib.FieldMap("x", "image", (32, 32, 3),
                                                                            image_policy="resize"))
  assert out.shape == (2, 32, 32, 3) and (out == 7).all()


def test_dict_actions_are_concatenated_and_odd_frames_padded():
  """RT-1-style dict actions (a vector and a boolean gripper) and Language-Table's 360x640 frames."""
  from gato_jax import map_numpy  # pylint: disable=g-import-not-at-top
  from gato_jax.mapping import Leaf, infer  # pylint: disable=g-import-not-at-top
  leaves = [Leaf("action/world_vector", "float32", (3,), low=-0.5, high=0.7),
            Leaf("action/open_gripper", "bool", ()), Leaf("observation/rgb", "uint8", (360, 640, 3)),
            Leaf("reward", "float32", ()), Leaf("is_first", "bool", ())]
  mapping = infer(leaves, ["action/world_vector", "action/open_gripper"], ignore=("is_first",),
                  strip_prefix="observation/")
  assert mapping.observation["rgb"].shape == (368, 640, 3) and mapping.observation["rgb"].image_policy == "pad"
  spec = mapping.action.action_spec()
  assert spec.shape == (4,) and spec.low == (-1.0, -1.0, -1.0, 0.0) and spec.high == (1.0,) * 4
  raw = {"action": {"world_vector": np.array([[0.1, -0.2, 0.3], [0.0, 0.5, -0.5]], np.float32),
                    "open_gripper": np.array([True, False])},
         "observation": {"rgb": np.zeros([2, 360, 640, 3], np.uint8)}, "reward": np.array([0.0, 1.0]),
         "is_first": np.array([True, False]), "is_last": np.array([False, True]),
         "is_terminal": np.array([False, True])}
  steps = map_numpy.map_rlds_steps(mapping, raw)
  np.testing.assert_allclose(steps["action"], [[0.1, -0.2, 0.3, 1.0], [0.0, 0.5, -0.5, 0.0]])
  assert steps["observation"]["rgb"].shape == (2, 368, 640, 3) and steps["is_last"].tolist() == [False, True]
  dropped = map_numpy.map_rlds_steps(mapping.with_overrides({"last_step": "drop"}), raw)
  assert dropped["action"].shape == (1, 4) and dropped["is_last"].tolist() == [True]
  assert dropped["is_terminal"].tolist() == [True] and raw["is_last"].tolist() == [False, True]
