"""Minari: a dataset recorded with minari.DataCollector from the project's CartPole simulator and expert
-> mapping from its gymnasium spaces -> TFDS dataset -> SeqIO task -> a few training steps mixed with a
built-in task -> gato-eval's rollouts in the recorded environment, normalised by Minari's reference
scores; a malformed episode is named and leaves nothing behind."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("minari")
pytest.importorskip("gymnasium")

from data_pipelines import importers  # pylint: disable=g-import-not-at-top
from testlib import foreign_fixtures as fixtures  # pylint: disable=g-import-not-at-top
from data_pipelines.importers import minari as minari_import  # pylint: disable=g-import-not-at-top
from gato_jax.data import sources  # pylint: disable=g-import-not-at-top
from gato_jax.envs import registry  # pylint: disable=g-import-not-at-top
from gato_jax.episodes import EpisodeError  # pylint: disable=g-import-not-at-top
from gato_jax.evaluation import datasets as eval_datasets  # pylint: disable=g-import-not-at-top
from gato_jax.evaluation.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
from gato_jax.mapping import ActionMap, EpisodeMapping, FieldMap  # pylint: disable=g-import-not-at-top
from gato_jax.envs import recorded  # pylint: disable=g-import-not-at-top
import gymnasium as gym  # pylint: disable=g-import-not-at-top
import import_support  # pylint: disable=g-import-not-at-top

MAPPING = EpisodeMapping({"state": FieldMap("observation", "continuous", (4,))},
                         ActionMap(("action",), "discrete", (), (2,)))


@pytest.fixture(scope="module", name="minari_root")
def fixture_minari_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("minari"))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Minari asks for an author and a code permalink
    fixtures.record_minari_fixture(root)
    fixtures.record_minari_fixture(root, dataset_id="gato/cartpole/bad-v0", corrupt=(2, 5))
    fixtures.record_minari_fixture(root, episodes=3, dataset_id="gato/cartpole/noref-v0", reference_scores=False)
    fixtures.record_minari_pendulum(root, nan_action=(1, 17))
  return root


def test_without_reference_scores_any_name_imports(minari_root, tmp_path):
  """DataCollector's default records no reference scores: the data's mean return is the expert's and
  random-policy rollouts in the recorded env the random return, under whatever name it is imported."""
  builder = minari_import.import_minari("gato/cartpole/noref-v0", "pole_noref", str(tmp_path), root=minari_root)
  metadata = dict(builder.info.metadata)
  assert metadata["expert_return"] == pytest.approx(metadata["dataset_return_mean"])
  assert 5 <= metadata["random_return"] <= 60 and metadata["score_reference"].startswith("expert: mean return")


def test_a_nan_action_is_named_at_its_own_step(minari_root, tmp_path):
  """The NaN action at step 17 makes the observation of step 18 NaN as well: the action is the cause."""
  with pytest.raises(EpisodeError, match=r"^dataset 'pendulum_nan': task 'pendulum_nan', episode 1 \(Minari "
                     r"episode id 1\), step 17: field 'action': \[nan\] is outside the action space"):
    minari_import.import_minari(fixtures.PENDULUM_ID, "pendulum_nan", str(tmp_path), root=minari_root)


def test_mapping_from_the_recorded_spaces(minari_root):
  text = minari_import.inspect(fixtures.MINARI_ID, root=minari_root, name="minari_cartpole")
  print(text)
  assert importers.inspect(fixtures.MINARI_ID, minari_root=minari_root, name="minari_cartpole") == text
  assert "ref scores min 22.0 max 60.0" in text and "env CartPole-v1" in text
  mapping = minari_import.infer_mapping(minari_import.load(fixtures.MINARI_ID, minari_root))
  spec = mapping.task_spec("minari_cartpole")
  assert spec.observation["state"].shape == (4,) and spec.action.kind == "discrete" and spec.action.num_values == (2,)
  with pytest.raises(ValueError, match="not in the local Minari root"):
    minari_import.load("gato/cartpole/missing-v0", minari_root)


@pytest.mark.slow
def test_imported_trains_and_evaluates_in_the_recorded_env(minari_root, tmp_path):
  data_dir = str(tmp_path / "data")
  refs = import_support.base_data_dir(data_dir)
  builder = minari_import.import_minari(fixtures.MINARI_ID, "minari_cartpole", data_dir, root=minari_root)
  metadata = dict(builder.info.metadata)
  assert metadata["expert_return"] == 60.0 and metadata["random_return"] == 22.0
  assert metadata["score_reference"] == "minari ref_min_score/ref_max_score"
  assert builder.info.splits["train"].num_examples == 5 and builder.info.splits["validation"].num_examples == 1
  ref = sources.discover_datasets(data_dir)["minari_cartpole"]
  assert ref.kind == "control" and ref.domain == "minari"

  # The recorded env, through the registry hook gato-eval uses.
  task = registry.task_for_dataset("minari_cartpole", sources.read_metadata("minari_cartpole", data_dir))
  env = task.make_env(0)
  raw, _ = task.reset(env, 3)
  assert env.spec.id == "CartPole-v1" and env.spec.max_episode_steps == 60 and task.max_steps == 60
  np.testing.assert_array_equal(task.observation_fn(raw, env)["state"], np.asarray(raw, np.float32))
  env.close()

  config, _ = import_support.train_a_few_steps(data_dir, tmp_path / "work", refs + [ref],
                                               "minari_cartpole:2,cartpole:1", steps=2)
  config.eval.episodes_per_task = 2
  config.eval.num_envs = 2
  config.eval.max_steps = 8
  config.eval.offline = False
  config.eval.captions = 0
  config.eval.gif = True  # replayed in the TF-free child process, which unpickles the recorded make_env
  evaluator = Evaluator(config, str(tmp_path / "work"), tasks=["minari_cartpole"])
  assert isinstance(evaluator.datasets["minari_cartpole"], eval_datasets.ControlDataset)
  report = evaluator.evaluate_checkpoint()
  entry = report["tasks"]["minari_cartpole"]
  assert entry["episodes"] == 2 and entry["crashed_episodes"] == 0, entry["errors"]
  assert entry["expert_return"] == 60.0 and entry["random_return"] == 22.0
  assert 1 <= entry["mean_length"] <= 8 and np.isfinite(entry["normalized_score"])
  assert entry["normalized_score"] == pytest.approx((entry["mean_return"] - 22.0) / (60.0 - 22.0))
  assert os.path.exists(report["gifs"]["minari_cartpole"])


def test_the_recorded_env_loads_without_tensorflow(tmp_path):
  """What gato-eval's GIF process does: unpickle the recorded make_env and step it, TF never loaded."""
  task = recorded.task_from_metadata("recorded_pole", {
      "recorded_env": {"env_spec": gym.make("CartPole-v1").spec.to_json()}, "mapping": MAPPING.to_dict(),
      "task_spec": MAPPING.task_spec("recorded_pole").to_dict()})
  path = tmp_path / "make_env.pkl"
  path.write_bytes(pickle.dumps(task.make_env))
  code = ("import pickle, sys; env = pickle.load(open(sys.argv[1], 'rb'))(0); env.reset(seed=1); env.step(0); "
          "print(env.spec.id, 'tensorflow' in sys.modules, 'gato_jax.data' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.split() == ["CartPole-v1", "False", "False"], out.stderr[-2000:]


def test_a_malformed_episode_is_named_and_nothing_is_left(minari_root, tmp_path):
  data_dir = tmp_path / "data"
  with pytest.raises(EpisodeError, match=r"dataset 'bad_cartpole': task 'bad_cartpole', episode \d+ \(Minari "
                     r"episode id 2\), step 5: field 'observation/state': non-finite"):
    minari_import.import_minari("gato/cartpole/bad-v0", "bad_cartpole", str(data_dir), root=minari_root)
  assert not sources.dataset_exists("bad_cartpole", str(data_dir))
  assert not os.path.exists(data_dir / "bad_cartpole")


def test_dict_spaces_map_to_nested_fields_and_back_in_the_simulator():
  """A BabyAI-like Dict observation (small uint8 grid, direction, mission text) and a Box frame."""
  from gymnasium import spaces  # pylint: disable=g-import-not-at-top
  from gato_jax import map_numpy  # pylint: disable=g-import-not-at-top
  from gato_jax.mapping import gym_leaves, infer  # pylint: disable=g-import-not-at-top
  observation = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "direction": spaces.Discrete(4),
                             "mission": spaces.Text(64), "camera": spaces.Box(0, 255, (60, 80, 3), np.uint8)})
  leaves = gym_leaves(observation, "observation") + gym_leaves(spaces.Discrete(7), "action")
  mapping = infer(leaves, ["action"], strip_prefix="observation/")
  spec = mapping.task_spec("grid")
  assert spec.observation["image"].modality == "discrete" and spec.observation["image"].num_values == 256
  assert spec.observation["direction"].num_values == 4 and spec.observation["mission"].modality == "text"
  assert spec.observation["camera"].shape == (64, 80, 3) and mapping.observation["camera"].image_policy == "pad"
  raw = observation.sample()
  mapped = map_numpy.map_observation(mapping, raw)
  assert mapped["mission"] == raw["mission"] and int(mapped["direction"]) == int(raw["direction"])
  np.testing.assert_array_equal(mapped["image"], raw["image"].astype(np.int32))
  np.testing.assert_array_equal(mapped["camera"][2:62], raw["camera"])  # padded 2 rows above and below
  from gato_jax.episodes import validate_episode  # pylint: disable=g-import-not-at-top
  steps = map_numpy.map_steps(mapping, lambda p: [raw[p.split("/")[1]]] * 3 if p == "observation/mission" else (
      np.zeros(3, np.int64) if p == "action" else np.stack([raw[p.split("/")[1]]] * 3)), 3)
  steps.update(is_first=np.array([True, False, False]), is_last=np.array([False, False, True]),
               is_terminal=np.array([False, False, True]))
  assert validate_episode({"steps": steps}, spec) == 3
