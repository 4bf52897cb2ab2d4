"""Atari 2600 games (ALE through ale-py, whose wheels ship the ROMs) with the RAM-reading experts.

Protocol: gymnasium's ALE/<Game>-v5 (frame skip 4, sticky actions with probability 0.25, the FULL
18-action set so that every game's action ids mean the same joystick input), episodes capped at
4500 steps = 18,000 frames, the 5-minute cap of the DQN Nature evaluation whose human and random
scores normalise ours (reference.py). The sticky-action RNG is seeded by reset(seed=...), and the
experts' look-ahead restores the emulator with its RNG, so each episode is a function of its seed.

Observation `image` (uint8 RGB, stored as PNG), one of two settings per dataset:
  atari_<game>          Gato's full frame, 210x160 zero-padded to 224x160 (14 x 10 = 140 patches)
  atari_<game>_compact  resized to 84x84 (bilinear, PIL) and zero-padded to 96x96 (6 x 6 = 36 patches)
Every episode is kept (the experts' scores vary with the sticky actions; none is filtered).
"""

import functools

import gymnasium as gym
import numpy as np

from gato_jax.envs.atari import experts
from gato_jax.envs.control import ControlTask
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

NUM_ACTIONS = 18
MAX_STEPS = 4500  # 18,000 frames at frame skip 4
FULL_SHAPE = (224, 160, 3)
COMPACT_SIZE, COMPACT_SHAPE = 84, (96, 96, 3)

# dataset game name -> (ALE game id, expert factory)
GAMES = {
    "pong": ("Pong", experts.pong_expert),
    "breakout": ("Breakout", experts.breakout_expert),
    "freeway": ("Freeway", experts.freeway_expert),
}


def _make_env(game: str, seed: int):
  del seed  # episodes are seeded by reset(seed=...)
  import ale_py  # optional simulator
  gym.register_envs(ale_py)
  return gym.make(f"ALE/{game}-v5", full_action_space=True, frameskip=4, repeat_action_probability=0.25,
                  max_num_frames_per_episode=108_000)


def _pad(frame: np.ndarray, shape) -> np.ndarray:
  out = np.zeros(shape, np.uint8)
  top, left = (shape[0] - frame.shape[0]) // 2, (shape[1] - frame.shape[1]) // 2
  out[top:top + frame.shape[0], left:left + frame.shape[1]] = frame
  return out


def full_frame(raw_obs, env=None):
  """The RGB frame padded to 224x160 (7 rows of zeros above and below)."""
  del env
  return {"image": _pad(np.asarray(raw_obs, np.uint8), FULL_SHAPE)}


def compact_frame(raw_obs, env=None):
  """The RGB frame resized to 84x84 and padded to 96x96 (6 pixels of zeros on every side)."""
  del env
  from PIL import Image  # Pillow: resizing only
  small = Image.fromarray(np.asarray(raw_obs, np.uint8)).resize((COMPACT_SIZE, COMPACT_SIZE),
                                                                Image.Resampling.BILINEAR)
  return {"image": _pad(np.asarray(small), COMPACT_SHAPE)}


def make_task(game: str, compact: bool = False, max_steps: int = MAX_STEPS) -> ControlTask:
  """atari_<game> (full frames) or atari_<game>_compact as a ControlTask."""
  ale_game, expert = GAMES[game]
  name = f"atari_{game}" + ("_compact" if compact else "")
  shape = COMPACT_SHAPE if compact else FULL_SHAPE
  spec = TaskSpec(name, {"image": FieldSpec("image", shape)}, ActionSpec("discrete", (), (NUM_ACTIONS,)))
  frames = "84x84 resized, padded to 96x96" if compact else "210x160 padded to 224x160"
  return ControlTask(
      name=name, spec=spec, make_env=functools.partial(_make_env, ale_game),
      observation_fn=compact_frame if compact else full_frame, make_expert=expert, max_steps=max_steps,
      description=f"ALE/{ale_game}-v5 (sticky 0.25, full action set), RAM-reading expert, RGB {frames}.")


# (task, default number of train episodes for gato-data): an episode is up to 4500 frames.
TASKS = [(make_task(game, compact), 20) for game in GAMES for compact in (False, True)]
