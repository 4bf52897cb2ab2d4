"""BabyAI levels (minigrid) driven by the BabyAI bot that ships in minigrid, the bot Gato's data used.

Observation: `mission` (text), `direction` (discrete, 4 values) and either `grid`, the 7x7 symbolic
agent view with each cell's (object, colour, state) ids packed into ONE discrete value
object + 11 * (colour + 6 * state) < 198 (49 tokens a step instead of 147: the context holds three
times as many timesteps), or for the `_image` variants `image`,
the same agent view rendered by minigrid at 8 pixels per tile (56x56) and zero-padded by 4 pixels on
every side to 64x64 (16 patches; sides must be multiples of 16). Action: all 7 minigrid actions
(left, right, forward, pickup, drop, toggle, done), the same for every level so they share meaning.
Only successful episodes are kept (BabyAI pays a reward > 0 only on success). Episodes end when the
level does (its own max_steps).
"""

import contextlib
import functools
import io

import gymnasium as gym
import numpy as np

from gato_jax.envs.control import ControlTask
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec

NUM_ACTIONS = 7
VIEW_SIZE = 7
NUM_OBJECTS, NUM_COLORS, NUM_STATES = 11, 6, 3  # minigrid's OBJECT_TO_IDX, COLOR_TO_IDX, STATE_TO_IDX
NUM_GRID_VALUES = NUM_OBJECTS * NUM_COLORS * NUM_STATES
TILE_SIZE = 8
IMAGE_SIZE = 64


def _make_env(level: str, seed: int):
  del seed  # episodes are seeded by reset(seed=...)
  import minigrid  # registers the BabyAI levels with gymnasium
  del minigrid
  return gym.make(level)


def _reset(env, seed: int):
  # Level generation prints every rejected sample to stdout ("Sampling rejected: ...").
  with contextlib.redirect_stdout(io.StringIO()):
    return env.reset(seed=seed)


def render_view(env) -> np.ndarray:
  """The agent's 7x7 view rendered as RGB, padded to IMAGE_SIZE x IMAGE_SIZE (uint8)."""
  view = env.unwrapped.get_pov_render(tile_size=TILE_SIZE)
  pad = IMAGE_SIZE - view.shape[0]
  top, left = pad // 2, (IMAGE_SIZE - view.shape[1]) // 2
  image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  image[top:top + view.shape[0], left:left + view.shape[1]] = view
  return image


def _symbolic_observation(raw_obs, env):
  del env
  view = raw_obs["image"].astype(np.int32)
  grid = view[..., 0] + NUM_OBJECTS * (view[..., 1] + NUM_COLORS * view[..., 2])
  return {"direction": np.int32(raw_obs["direction"]), "grid": grid, "mission": raw_obs["mission"]}


def _image_observation(raw_obs, env):
  return {"direction": np.int32(raw_obs["direction"]), "image": render_view(env),
          "mission": raw_obs["mission"]}


def _bot_expert(env):
  from minigrid.utils.baby_ai_bot import BabyAIBot
  bot = BabyAIBot(env.unwrapped)

  def policy(observation, raw_obs, env):
    del observation, raw_obs, env
    return int(bot.replan())

  return policy


def _succeeded(episode) -> bool:
  return episode["episode_return"] > 0


def make_task(name: str, level: str, image: bool = False, max_steps: int = 1000) -> ControlTask:
  """A BabyAI level as a ControlTask (`level` is the gymnasium id, e.g. 'BabyAI-GoToLocal-v0')."""
  view = (FieldSpec("image", (IMAGE_SIZE, IMAGE_SIZE, 3)) if image
          else FieldSpec("discrete", (VIEW_SIZE, VIEW_SIZE), num_values=NUM_GRID_VALUES))
  observation = {"direction": FieldSpec("discrete", (), num_values=4), "mission": FieldSpec("text"),
                 "image" if image else "grid": view}
  spec = TaskSpec(name, observation, ActionSpec("discrete", (), (NUM_ACTIONS,)))
  return ControlTask(
      name=name, spec=spec, make_env=functools.partial(_make_env, level),
      observation_fn=_image_observation if image else _symbolic_observation,
      make_expert=_bot_expert, keep_episode=_succeeded, max_steps=max_steps, reset_fn=_reset,
      description=f"{level}, BabyAI bot, {'64x64 RGB' if image else '7x7 symbolic (a value a cell)'} agent view.")


LEVELS = {
    "babyai_gotoredball": "BabyAI-GoToRedBall-v0",
    "babyai_gotolocal": "BabyAI-GoToLocal-v0",
    "babyai_pickuploc": "BabyAI-PickupLoc-v0",
    "babyai_opendoor": "BabyAI-OpenDoor-v0",
    "babyai_putnextlocal": "BabyAI-PutNextLocal-v0",
}

# (task, default number of train episodes for gato-data): BabyAI episodes are 4-12 steps.
TASKS = [(make_task(name, level), 1000) for name, level in LEVELS.items()]
TASKS.append((make_task("babyai_gotoredball_image", LEVELS["babyai_gotoredball"], image=True), 1000))
