"""Small stand-ins for evaluation tests and benchmarks: a tiny config, a tiny SentencePiece model, a
simulator that crashes on cue, and a checkpoint written the way training writes it."""

import functools
import os
from typing import Optional

import gymnasium as gym
import numpy as np

from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

MISSION_WORDS = ("go to the red ball", "go to the blue key", "pick up a green box", "open the door",
                 "put the purple ball next to the grey key", "go to a yellow box")


def tiny_config(text_vocab_size: int = 512, context: int = 128):
  """experiments/tiny_demo.py shrunk to a one-layer, 32-wide model (fast to compile on CPU)."""
  from experiments import tiny_demo  # pylint: disable=g-import-not-at-top
  c = tiny_demo.get_config()
  c.vocab.text_vocab_size = text_vocab_size
  c.model.update(num_layers=1, num_heads=2, head_dim=16, embed_dim=32, mlp_dim=64, resnet_groups=4,
                 patch_channels=8, max_length=context, max_image_tokens=-1)
  c.data.sequence_length = context
  c.eval.update(episodes_per_task=2, num_envs=2, max_steps=8, offline_batches=1, offline_batch_size=4,
                captions=2, caption_max_tokens=4, gif_max_frames=4, bootstrap_samples=200)
  return c


def tiny_model(config, seed: int = 0):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from gato_jax.model import Gato  # pylint: disable=g-import-not-at-top
  from gato_jax.tokenizers import VocabLayout  # pylint: disable=g-import-not-at-top
  return Gato(config.model, VocabLayout.from_config(config.vocab), nnx.Rngs(seed))


def tiny_sentencepiece(directory: str, vocab_size: int = 48) -> str:
  """A SentencePiece model trained on a few BabyAI-like missions (ids < vocab_size); returns its path."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, f"tiny_{vocab_size}.model")
  if not os.path.exists(path):
    os.makedirs(directory, exist_ok=True)
    sentences = [f"{m} {w}" for m in MISSION_WORDS for w in ("now", "please", "", "then stop")]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences * 8), model_prefix=path[:-len(".model")],
                                   vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
  return path


class CountingEnv(gym.Env):
  """A deterministic toy simulator: reward 1 per step while the action matches the parity of the step,
  episodes of `length` steps; in episodes seeded with one of `crash_seeds`, step `crash_at` raises, as
  a broken simulator would."""

  def __init__(self, length: int = 6, crash_at: Optional[int] = None, continuous: bool = False,
               crash_seeds: tuple = ()):
    self.length, self.crash_at, self.crash_seeds = length, crash_at, tuple(crash_seeds)
    self.seed = None
    self.observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    self.action_space = (gym.spaces.Box(-1, 1, (2,), np.float32) if continuous else gym.spaces.Discrete(2))
    self.t = 0

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self.t, self.seed = 0, seed
    return self._obs(), {}

  def _obs(self):
    return np.array([self.t, self.t % 2, 1.0], np.float32)

  def step(self, action):
    if self.seed in self.crash_seeds and self.t == self.crash_at:
      raise RuntimeError(f"simulated simulator crash at step {self.t}")
    good = (int(np.asarray(action).reshape(-1)[0] > 0) if np.asarray(action).dtype.kind == "f"
            else int(action)) == self.t % 2
    self.t += 1
    return self._obs(), float(good), False, self.t >= self.length, {"success": self.t >= self.length}

  def render(self):
    return np.full((32, 48, 3), 40 * self.t % 256, np.uint8)


def _counting_env(length, crash_at, continuous, crash_seeds, seed):
  del seed
  return CountingEnv(length, crash_at, continuous, crash_seeds)


def _state_observation(raw, env):
  del env
  return {"state": np.asarray(raw, np.float32)}


def _parity_expert(env):
  def policy(observation, raw, env):
    del observation, raw
    return int(env.unwrapped.t % 2)
  return policy


def counting_task(name: str = "counting", length: int = 6, crash_at: Optional[int] = None,
                  continuous: bool = False, crash_seeds: tuple = ()):
  """A data_pipelines ControlTask over CountingEnv (module-level functions, so replay.py can pickle it)."""
  from gato_jax.envs.control import ControlTask  # pylint: disable=g-import-not-at-top
  action = (ActionSpec("continuous", (2,), (), (-1.0, -1.0), (1.0, 1.0)) if continuous
            else ActionSpec("discrete", (), (2,)))
  spec = TaskSpec(name, {"state": FieldSpec("continuous", (3,))}, action)
  return ControlTask(name=name, spec=spec, make_env=functools.partial(_counting_env, length, crash_at, continuous,
                                                       tuple(crash_seeds)),
                     observation_fn=_state_observation, make_expert=_parity_expert, max_steps=100)


def write_checkpoint(config, workdir: str, step: int, seed: int = 0, model=None) -> str:
  """Saves a model's params (and its config) as `<workdir>/checkpoints/<step>`, through the training's
  TrainCheckpointManager (state = {"params", "step"}, what evaluation reads)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gato_jax import checkpointing  # pylint: disable=g-import-not-at-top
  model = model if model is not None else tiny_model(config, seed)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  manager = checkpointing.TrainCheckpointManager(os.path.join(workdir, "checkpoints"), every_steps=1,
                                                 keep_last=10, async_save=False)
  try:
    manager.save(step, {"params": params, "step": jnp.asarray(step, jnp.int32)},
                 config=checkpointing.config_to_json(config), force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return os.path.join(workdir, "checkpoints", str(step))
