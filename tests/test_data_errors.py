"""Bad input stops the SeqIO side with errors naming what is wrong: mixtures, lengths, episodes."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from gato_jax.data import mixtures, pipeline, readers, sources, tasks
from testlib import data_testing as testing
from gato_jax.data.feature_converter import task_feature_lengths
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

POLE = testing.cartpole_like_spec("bad_pole")


def episodes_with(corrupt):
  rng = np.random.default_rng(0)
  train = [testing.random_episode(POLE, rng, 4, i) for i in range(3)]
  corrupt(train[1])
  return {"train": train, "validation": [testing.random_episode(POLE, rng, 3, 100)]}


def set_nan(ep):
  ep["steps"][2]["observation"]["state"][1] = np.nan


def set_bad_action(ep):
  ep["steps"][3]["action"] = np.int64(5)


def make_empty(ep):
  ep["steps"] = []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("bad")
  refs = testing.build_tiny_data_dir(data_dir, num_episodes=(4, 2))
  bad = {}
  for name, corrupt in (("bad_nan", set_nan), ("bad_action", set_bad_action), ("bad_empty", make_empty)):
    spec = TaskSpec(name, POLE.observation, POLE.action)
    testing.build_control_dataset(data_dir, spec, None, episodes=episodes_with(corrupt))
    bad[name] = sources.DatasetRef(name, "control", spec)
  config = testing.tiny_config(data_dir, mixture="tiny_pole:1", sequence_length=32, batch_size=4)
  return data_dir, refs, bad, config


def read_all(ref, config):
  task = tasks.make_task(ref, tasks.PreprocessingOptions.from_config(config))
  ds = task.get_dataset(task_feature_lengths(32), "train", shuffle=False, seed=0, num_epochs=1)
  return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("name,where", [("bad_nan", "episode 1, step 2: field 'observation/state': non-finite"),
                                        ("bad_action", "episode 1, step 3: field 'action': [5] is outside"),
                                        ("bad_empty", "episode 1: field 'steps': the episode is empty")])
def test_malformed_episode_names_dataset_split_episode_and_field(data, name, where):
  _, _, bad, config = data
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    read_all(bad[name], config)
  line = readers.malformed_episode_line(e.value)
  assert line.startswith(f"malformed episode: dataset {name}, split train, {where}"), line


def test_spec_and_dataset_disagreeing_is_refused_at_construction(data):
  _, _, _, config = data
  wrong_shape = TaskSpec("tiny_pole", {"state": FieldSpec("continuous", (5,))}, POLE.action)
  with pytest.raises(ValueError, match=r"dataset 'tiny_pole': field 'observation/state': per-step shape \(4,\)"):
    read_all(sources.DatasetRef("tiny_pole", "control", wrong_shape), config)
  extra = TaskSpec("tiny_pole", {**POLE.observation, "extra": FieldSpec("discrete", (2,))}, POLE.action)
  with pytest.raises(ValueError, match=r"missing \['extra'\]"):
    read_all(sources.DatasetRef("tiny_pole", "control", extra), config)
  wrong_action = TaskSpec("tiny_pole", POLE.observation, ActionSpec("continuous", (2,), (), (-1, -1), (1, 1)))
  with pytest.raises(ValueError, match=r"field 'action': per-step shape \(\), expected \(2,\)"):
    read_all(sources.DatasetRef("tiny_pole", "control", wrong_action), config)


def test_bad_mixtures_are_refused_with_their_names(data):
  data_dir, refs, _, _ = data

  def mixture(spec):
    return pipeline.make_mixture(testing.tiny_config(data_dir, mixture=spec), refs)

  with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):
    mixture("tiny_pole:1,nope:2")
  for rate in ("0", "-1"):
    with pytest.raises(ValueError, match=r"rates must be numbers > 0.*tiny_pole"):
      mixture(f"tiny_pole:{rate},text:1")
  with pytest.raises(ValueError, match=r"rate 'x' of task 'tiny_pole' is not a number"):
    mixture("tiny_pole:x")
  with pytest.raises(ValueError, match=r"unknown mixture 'no_such_mixture'"):
    mixture("no_such_mixture")
  # The tiny data_dir has none of the demo's datasets, whatever other code of this process registered.
  with pytest.raises(ValueError, match=r"'control_demo' names unknown task\(s\) \['babyai_gotoredball', "
                                       r"'cartpole', 'metaworld_reach'\]; the data_dir's datasets: \["):
    mixture("control_demo")


def test_too_short_sequences_missing_data_and_uneven_batches_are_refused(data):
  data_dir, refs, bad, config = data
  short = testing.tiny_config(data_dir, mixture="tiny_pole:1,tiny_grid:1", sequence_length=5)
  # tiny_grid: 4 patches + direction + separator + action = 7 tokens > L + 1 = 6.
  with pytest.raises(ValueError, match=r"sequence length 5 is too short for one timestep .* 'tiny_grid'"):
    pipeline.make_dataset(short, datasets=refs)
  ghost = sources.DatasetRef("ghost", "control", TaskSpec("ghost", POLE.observation, POLE.action))
  missing = testing.tiny_config(data_dir, mixture="tiny_pole:1,ghost:1")
  with pytest.raises(FileNotFoundError, match=r"dataset 'ghost' is not built .*gato-data build --dataset=ghost"):
    pipeline.make_dataset(missing, datasets=refs + [ghost])
  with pytest.raises(ValueError, match=r"batch_size 4 must be a multiple of the process count 3"):
    pipeline.make_dataset(config, process_index=0, process_count=3, datasets=refs)
  no_model = testing.tiny_config(data_dir, mixture="tiny_grid:1")
  no_model.vocab.sentencepiece_model = str(data_dir / "absent.model")
  with pytest.raises(FileNotFoundError, match=r"no SentencePiece model .*absent.model.*--dataset=sentencepiece"):
    pipeline.make_dataset(no_model, datasets=refs)


def test_vocabulary_spans_the_layout_and_decodes_text_only(data):
  _, refs, _, config = data
  vocab = tasks.PreprocessingOptions.from_config(config).vocabulary
  layout = vocab.layout
  assert vocab.vocab_size == layout.vocab_size
  ids = list(vocab.encode("go to the red ball"))
  mixed = [layout.separator_id, 0] + ids + [layout.discrete_offset + 3, layout.continuous_offset]
  assert vocab.decode(mixed) == "go to the red ball"
  assert vocab.decode_tf(tf.constant(mixed)).numpy().decode() == "go to the red ball"
  assert vocab == tasks.PreprocessingOptions.from_config(config).vocabulary
  assert tasks.make_tasks(config, refs)["tiny_pole"].output_features["tokens"].vocabulary == vocab


def test_images_the_model_cannot_see_are_refused_before_training(data):
  """tiny_demo's max_image_tokens=0 with an image task: one line naming the task, its image fields and
  the key, from gato-train's data setup (before it would stop with a NaN loss at step 1)."""
  from gato_jax.tokenizers import VocabLayout  # pylint: disable=g-import-not-at-top
  from gato_jax.training import loop  # pylint: disable=g-import-not-at-top
  data_dir, refs, _, _ = data
  config = testing.tiny_config(data_dir, mixture="tiny_pole:1,tiny_grid:1")
  assert config.model.max_image_tokens == 0
  with pytest.raises(ValueError, match=r"^mixture '.*': task 'tiny_grid' has images \(observation/image \(4 "
                     r"patches\)\) but config.model.max_image_tokens=0 encodes none; set "
                     r"--config.model.max_image_tokens=-1 \(every image position\) or at least 4$"):
    pipeline.check_model_fits(config, datasets=refs)
  config.model.max_image_tokens = 3
  with pytest.raises(ValueError, match=r"encodes only 3 per sequence"):
    pipeline.check_model_fits(config, datasets=refs)
  with pytest.raises(loop.ConfigError, match=r"config.data.mixture=.*tiny_grid.*max_image_tokens=3"):
    loop.make_data_iterator(config, VocabLayout.from_config(config.vocab))
  config.model.max_image_tokens = -1
  pipeline.check_model_fits(config, datasets=refs)
  config.model.max_image_tokens = 0
  config.data.mixture = "tiny_pole:1"  # no images: nothing to see
  pipeline.check_model_fits(config, datasets=refs)


def test_a_malformed_episode_stops_a_new_run_in_one_line_leaving_only_the_log(data, tmp_path):
  """#21: the streaming check's failure in training names dataset, episode, step and field in one line;
  the new run's workdir keeps nothing but its log (no config.json, TensorBoard or checkpoints/)."""
  from gato_jax.training import loop  # pylint: disable=g-import-not-at-top
  data_dir, refs, bad, _ = data
  config = testing.tiny_config(data_dir, mixture="bad_nan:1", sequence_length=32, batch_size=4)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
  config.num_train_steps, config.checkpoint_every_steps, config.log_every_steps = 20, 1, 1
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "logs").mkdir()
  import jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(loop.DataLossError) as error:
    loop.train(config, str(workdir), devices=jax.devices()[:1])
  message = str(error.value)
  assert message.startswith("malformed episode: dataset bad_nan, split train") and "\n" not in message
  assert "step 2: field 'observation/state': non-finite value" in message
  assert sorted(p.name for p in workdir.iterdir()) == ["logs"]
