"""Small datasets written by each foreign format's own library, for tests and benchmarks (test code).

  write_rlds_fixture      an Open X-Embodiment-shaped RLDS dataset, written by a TFDS builder whose
                          DatasetInfo comes from TFDS's RLDS helpers (tfds.rlds.rlds_base); `wild=True`
                          adds scalar bool / float64 fields, float64 vectors, a camera of undeclared
                          size and a gripper action in [0, 2]
  write_jat_fixture       JAT-layout configs (Atari-like, MuJoCo-like, text, captions) written with
                          Hugging Face `datasets` as parquet files, one folder per config like the Hub's
  record_minari_fixture   a Minari dataset recorded with minari.DataCollector from the project's CartPole
                          simulator and expert, with reference min / max scores or without (the default)
  record_minari_pendulum  Pendulum-v1 (a continuous action) recorded the same way, no reference scores

Every writer can make one (episode, step) invalid (NaN), so tests can check that importers name it.
"""

import os
from typing import Optional

import numpy as np

OXE_IMAGE = (256, 256, 3)
OXE_WRIST = (128, 128, 3)


def write_rlds_fixture(root: str, name: str = "oxe_fixture", num_episodes: int = 4,
                       corrupt: Optional[tuple] = None, seed: int = 0, num_shards: int = 1,
                       wild: bool = False) -> str:
  """An RLDS dataset like an OXE robot dataset (two cameras, 8-D state, 7-D action, instruction) under
  root/name/1.0.0; returns that version directory (what `tfds.builder_from_directory` reads).
  `wild` adds the shapes real OXE datasets have and the first fixture lacked: a bool gripper flag and a
  float64 height (scalars), float64 joints, a third camera declared (None, None, 3) whose frames change
  size between episodes, and a gripper action in [0, 2] beside arm deltas within +-0.05.
  `corrupt=(episode, step[, field])` puts NaN into that step's field ("observation/state" by default;
  "action" for the action)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.rlds import rlds_base  # pylint: disable=g-import-not-at-top

  observation = {
      "image": tfds.features.Image(shape=OXE_IMAGE, dtype=np.uint8, encoding_format="jpeg"),
      "wrist_image": tfds.features.Image(shape=OXE_WRIST, dtype=np.uint8, encoding_format="jpeg"),
      "state": tfds.features.Tensor(shape=(8,), dtype=np.float32)}
  if wild:
    observation.update({
        "gripper_closed": tfds.features.Scalar(dtype=np.bool_),
        "height": tfds.features.Scalar(dtype=np.float64),
        "joints": tfds.features.Tensor(shape=(7,), dtype=np.float64),
        "side_image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="png")})
  config = rlds_base.DatasetConfig(
      name="oxe_like",
      observation_info=tfds.features.FeaturesDict(observation),
      action_info=tfds.features.Tensor(shape=(7,), dtype=np.float32),
      reward_info=tfds.features.Scalar(dtype=np.float32),
      discount_info=tfds.features.Scalar(dtype=np.float32),
      step_metadata_info={"language_instruction": tfds.features.Text(),
                          "language_embedding": tfds.features.Tensor(shape=(512,), dtype=np.float32)},
      episode_metadata_info={"episode_metadata": tfds.features.FeaturesDict(
          {"file_path": tfds.features.Text()})})
  instructions = ["pick up the red block", "open the drawer", "push the cup left"]

  def episode(i):
    rng = np.random.default_rng(seed * 1000 + i)
    num_steps = 4 + i % 3  # RLDS: the last step holds the final observation; its action is a filler
    side = (40 + 8 * (i % 3), 52 + 4 * (i % 2))  # undeclared, different per episode, not multiples of 16
    steps = []
    for t in range(num_steps):
      last = t == num_steps - 1
      gripper = 2.0 * (t % 2) if wild else float(t % 2)
      action = np.concatenate([rng.uniform(-0.05, 0.05, 6), [gripper]]).astype(np.float32)
      step = {
          "observation": {"image": rng.integers(0, 256, OXE_IMAGE, dtype=np.uint8),
                          "wrist_image": rng.integers(0, 256, OXE_WRIST, dtype=np.uint8),
                          "state": rng.normal(size=8).astype(np.float32)},
          "action": np.zeros(7, np.float32) if last else action,
          "reward": np.float32(last), "discount": np.float32(1.0), "is_first": t == 0, "is_last": last,
          "is_terminal": last, "language_instruction": instructions[i % len(instructions)],
          "language_embedding": rng.normal(size=512).astype(np.float32)}
      if wild:
        step["observation"].update(gripper_closed=bool(t % 2), height=np.float64(0.1 * t),
                                   joints=rng.normal(size=7), side_image=rng.integers(0, 256, side + (3,), np.uint8))
      steps.append(step)
    if corrupt is not None and corrupt[0] == i:
      field = corrupt[2] if len(corrupt) > 2 else "observation/state"
      if field == "action":
        steps[corrupt[1]]["action"][0] = np.nan
      else:
        steps[corrupt[1]]["observation"][field.split("/")[1]][..., 3 if field.endswith("state") else 0] = np.nan
    return {"steps": steps, "episode_metadata": {"file_path": f"/robot/episode_{i}.npy"}}

  class OxeLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [config]
    code_path = None  # TFDS would look for checksums next to this module

    def _info(self):
      return rlds_base.build_info(self.builder_config, self)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(range(num_episodes))}

    def _generate_examples(self, indices):
      for i in indices:
        yield f"episode_{i}", episode(i)

  OxeLike.name = name
  builder = OxeLike(data_dir=os.fspath(root), config="oxe_like")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return os.fspath(builder.data_dir)


JAT_CONFIGS = ("atari-pong", "mujoco-hopper", "babyai-goto", "oscar", "conceptual-captions")


def write_jat_fixture(root: str, episodes: int = 4, corrupt: Optional[tuple[int, int]] = None,
                      seed: int = 0) -> str:
  """The JAT layout (jat-project/jat-dataset): one folder per config holding `train-*.parquet` and
  `test-*.parquet` written by Hugging Face `datasets`, one row per episode (or document / pair):
    atari-pong           image_observations (84x84x4 uint8 frame stacks), discrete_actions, rewards
    mujoco-hopper        continuous_observations (11), continuous_actions (3, in [-1, 1]), rewards
    babyai-goto          discrete_observations (20 in [0, 11)), text_observations (the mission),
                         discrete_actions (7), rewards
    oscar                text
    conceptual-captions  images, text
  `corrupt=(episode, step)` puts NaN into that step of a mujoco-hopper training episode."""
  import datasets  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  seq = datasets.Sequence
  value = datasets.Value

  def rows(config, n, split):
    out = []
    for i in range(n):
      steps = int(rng.integers(5, 9))
      if config == "atari-pong":
        out.append({"image_observations": list(rng.integers(0, 256, (steps, 84, 84, 4), dtype=np.uint8)),
                    "discrete_actions": rng.integers(0, 6, steps).tolist(),
                    "rewards": rng.choice([-1.0, 0.0, 1.0], steps).astype(np.float32).tolist()})
      elif config == "mujoco-hopper":
        obs = rng.normal(size=(steps, 11)).astype(np.float32)
        if corrupt is not None and split == "train" and corrupt[0] == i:
          obs[corrupt[1], 2] = np.nan
        out.append({"continuous_observations": obs.tolist(),
                    "continuous_actions": rng.uniform(-1, 1, (steps, 3)).astype(np.float32).tolist(),
                    "rewards": rng.uniform(0, 3, steps).astype(np.float32).tolist()})
      elif config == "babyai-goto":
        mission = f"go to the {rng.choice(['red', 'blue', 'green'])} {rng.choice(['ball', 'key', 'box'])}"
        out.append({"discrete_observations": rng.integers(0, 11, (steps, 20)).tolist(),
                    "text_observations": [mission] * steps, "discrete_actions": rng.integers(0, 7, steps).tolist(),
                    "rewards": [0.0] * (steps - 1) + [0.9]})
      elif config == "oscar":
        out.append({"text": " ".join(rng.choice(["the", "agent", "reads", "a", "long", "page"], 40))})
      else:
        side = int(rng.integers(40, 90))
        out.append({"images": rng.integers(0, 256, (side, side + 7, 3), dtype=np.uint8),
                    "text": " ".join(rng.choice(["a", "red", "cat", "on", "the", "mat"], 6))})
    return out

  features = {
      "atari-pong": {"image_observations": seq(datasets.Image()), "discrete_actions": seq(value("int64")),
                     "rewards": seq(value("float32"))},
      "mujoco-hopper": {"continuous_observations": seq(seq(value("float32"))),
                        "continuous_actions": seq(seq(value("float32"))), "rewards": seq(value("float32"))},
      "babyai-goto": {"discrete_observations": seq(seq(value("int64"))), "text_observations": seq(value("string")),
                      "discrete_actions": seq(value("int64")), "rewards": seq(value("float32"))},
      "oscar": {"text": value("string")},
      "conceptual-captions": {"images": datasets.Image(), "text": value("string")},
  }
  for config in JAT_CONFIGS:
    os.makedirs(os.path.join(root, config), exist_ok=True)
    for split, n in (("train", episodes), ("test", max(1, episodes // 2))):
      ds = datasets.Dataset.from_list(rows(config, n, split), features=datasets.Features(features[config]))
      ds.to_parquet(os.path.join(root, config, f"{split}-00000-of-00001.parquet"))
  return os.fspath(root)


MINARI_ID = "gato/cartpole/expert-v0"


def _minari_root(root: str):
  """MINARI_DATASETS_PATH=root while inside (what minari.DataCollector writes to)."""
  import contextlib  # pylint: disable=g-import-not-at-top

  @contextlib.contextmanager
  def scope():
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.fspath(root)
    try:
      yield
    finally:
      if previous is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
      else:
        os.environ["MINARI_DATASETS_PATH"] = previous
  return scope()


def record_minari_fixture(root: str, episodes: int = 6, dataset_id: str = MINARI_ID,
                          corrupt: Optional[tuple[int, int]] = None, reference_scores: bool = True) -> str:
  """Records `episodes` CartPole-v1 episodes (at most 60 steps) of the project's LQR expert with
  minari.DataCollector into the Minari root `root`, with reference scores 60 (the capped maximum) and
  22 (CartPole's random policy) unless `reference_scores=False` (DataCollector's default: none);
  returns the dataset id. `corrupt=(episode, step)`: a Minari StepDataCallback records NaN in the
  observation the agent sees at that step."""
  import gymnasium as gym  # pylint: disable=g-import-not-at-top
  import minari  # pylint: disable=g-import-not-at-top
  from gato_jax.envs.classic_control import controllers  # pylint: disable=g-import-not-at-top

  class Recorder(minari.StepDataCallback):
    position = [-1, 0]  # episode, step of the observation being recorded

    def __call__(self, env, **kwargs):
      data = super().__call__(env, **kwargs)
      first = kwargs.get("action") is None
      self.position = [self.position[0] + 1, 0] if first else [self.position[0], self.position[1] + 1]
      if corrupt is not None and tuple(self.position) == tuple(corrupt):
        data["observation"] = np.full_like(data["observation"], np.nan)
      return data

  with _minari_root(root):
    env = minari.DataCollector(gym.make("CartPole-v1", max_episode_steps=60), record_infos=False,
                               step_data_callback=Recorder)
    for i in range(episodes):
      raw, _ = env.reset(seed=i)
      policy = controllers.cartpole_expert(env.unwrapped)
      done = False
      while not done:
        raw, _, terminated, truncated, _ = env.step(int(policy(None, raw, env.unwrapped)))
        done = terminated or truncated
    scores = {"ref_min_score": 22.0, "ref_max_score": 60.0} if reference_scores else {}
    env.create_dataset(dataset_id=dataset_id, algorithm_name="LQR bang-bang (gato_jax.envs.classic_control)",
                       description="CartPole-v1 episodes of the gato-jax LQR expert (test fixture).", **scores)
    env.close()
  return dataset_id


PENDULUM_ID = "gato/pendulum/random-v0"


def record_minari_pendulum(root: str, episodes: int = 3, dataset_id: str = PENDULUM_ID,
                           nan_action: Optional[tuple[int, int]] = None) -> str:
  """Pendulum-v1 (continuous Box action, float32 observations), 30 uniform-random steps an episode,
  recorded by minari.DataCollector without reference scores. `nan_action=(episode, step)`: the agent
  sends NaN at that step, as a diverged policy would; the simulator's next observation is NaN too."""
  import gymnasium as gym  # pylint: disable=g-import-not-at-top
  import minari  # pylint: disable=g-import-not-at-top
  with _minari_root(root):
    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=30), record_infos=False)
    rng = np.random.default_rng(0)
    for i in range(episodes):
      env.reset(seed=i)
      for t in range(30):
        action = rng.uniform(-2, 2, (1,)).astype(np.float32)
        if nan_action is not None and (i, t) == tuple(nan_action):
          action[:] = np.nan
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
          break
    env.create_dataset(dataset_id=dataset_id, algorithm_name="uniform random",
                       description="Pendulum-v1 random episodes (test fixture).")
    env.close()
  return dataset_id


def import_bench_datasets(data_dir: str, episodes: int = 30) -> list[str]:
  """Imports one dataset per format from these fixtures into data_dir (skipping those there already),
  RLDS twice (the OXE-like shapes, and `wild=True`'s scalars, float64 and a camera of undeclared size
  decoded frame by frame); returns one mixture per dataset shape for bench/input_pipeline.py. Images are mapped to 64x64 so that one
  timestep fits the demo's sequence length."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from data_pipelines.importers import jat, minari, rlds  # pylint: disable=g-import-not-at-top
  from gato_jax.data import sources  # pylint: disable=g-import-not-at-top
  data_dir = sources.expand_data_dir(data_dir)
  sources_dir = os.path.join(data_dir, "_import_sources")  # RLDS is read in place: keep its files
  if not sources.dataset_exists("bench_rlds", data_dir):
    path = write_rlds_fixture(os.path.join(sources_dir, "rlds"), name="bench_oxe", num_episodes=episodes,
                              num_shards=2)
    rlds.import_rlds(path, "bench_rlds", data_dir, {"image_size": [64, 64]})
  if not sources.dataset_exists("bench_rlds_wild", data_dir):  # + scalars, float64, an unsized camera
    path = write_rlds_fixture(os.path.join(sources_dir, "rlds_wild"), name="bench_oxe_wild",
                              num_episodes=episodes, num_shards=2, wild=True)
    rlds.import_rlds(path, "bench_rlds_wild", data_dir, {"image_size": [64, 64]})
  with tempfile.TemporaryDirectory() as tmp:
    if not sources.dataset_exists("bench_jat_pong", data_dir):
      root = write_jat_fixture(os.path.join(tmp, "jat"), episodes=episodes)
      jat.import_jat(root, "atari-pong", "bench_jat_pong", data_dir, image_size=(64, 64))
      jat.import_jat(root, "mujoco-hopper", "bench_jat_hopper", data_dir)
    if not sources.dataset_exists("bench_minari", data_dir):  # DataCollector's default: no reference scores
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record_minari_fixture(os.path.join(tmp, "minari"), episodes=episodes, reference_scores=False)
      minari.import_minari(MINARI_ID, "bench_minari", data_dir, root=os.path.join(tmp, "minari"))
  return ["bench_rlds:1", "bench_rlds_wild:1", "bench_jat_pong:1,bench_jat_hopper:1", "bench_minari:1"]
