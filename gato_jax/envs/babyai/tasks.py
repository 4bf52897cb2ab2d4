"""BabyAI levels (minigrid) driven by the BabyAI bot that ships in minigrid, the bot Gato's data used.

Observation: `mission` (text), `direction` (discrete, 4 values) and either `grid`, the 7x7 symbolic
agent view with each cell's (object, colour, state) ids packed into ONE discrete value
object + 11 * (colour + 6 * state) < 198 (49 tokens a step instead of 147: the context holds three
times as many timesteps), or for the `_image` variants `image`,
the same agent view rendered by minigrid at 8 pixels per tile (56x56) and zero-padded by 4 pixels on
every side to 64x64 (16 patches; sides must be multiples of 16). Action: all 7 minigrid actions
(left, right, forward, pickup, drop, toggle, done), the same for every level so they share meaning.
Only successful episodes are kept (BabyAI pays a reward > 0 only on success). Episodes end when the
level does (its own max_steps), or when the bot gives up (it raises on a few generated layouts).

Levels: every BabyAI level minigrid registers, except the four the bot cannot play (`UNSOLVED`), named
babyai_<level id without BabyAI- and -vN, lowercased> (BabyAI-GoToLocal-v0 -> babyai_gotolocal).
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


class _StopWhenBotFails(gym.Wrapper):
  """Truncates the episode after the step on which the bot gave up (see `_bot_expert`)."""

  def reset(self, **kwargs):
    self.unwrapped.bot_failed = False
    return self.env.reset(**kwargs)

  def step(self, action):
    obs, reward, terminated, truncated, info = self.env.step(action)
    return obs, reward, terminated, truncated or getattr(self.unwrapped, "bot_failed", False), info


def _make_env(level: str, seed: int):
  del seed  # episodes are seeded by reset(seed=...)
  import minigrid  # registers the BabyAI levels with gymnasium
  del minigrid
  return _StopWhenBotFails(gym.make(level))


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


class _BotStuck(Exception):
  """The bot searched more than BOT_SEARCHES_PER_STEP times to choose one action."""


# A replan normally runs a handful of breadth-first searches; on some layouts (UnlockToUnlock, seen on
# 1 seed in a few hundred) it pushes subgoals forever. Counting searches, not seconds, keeps the
# cut-off a function of the episode's seed.
BOT_SEARCHES_PER_STEP = 2000


def _bot_expert(env):
  from minigrid.utils.baby_ai_bot import BabyAIBot  # optional simulator
  bot = BabyAIBot(env.unwrapped)
  search = bot._breadth_first_search  # pylint: disable=protected-access
  budget = [0]

  def bounded_search(*args, **kwargs):
    budget[0] -= 1
    if budget[0] < 0:
      raise _BotStuck()
    return search(*args, **kwargs)

  bot._breadth_first_search = bounded_search  # pylint: disable=protected-access

  def policy(observation, raw_obs, env):
    del observation, raw_obs
    budget[0] = BOT_SEARCHES_PER_STEP
    try:
      return int(bot.replan())
    except (AssertionError, _BotStuck):  # "nothing left to explore", an endless replan: a failed
      env.unwrapped.bot_failed = True    # episode, not a crash
      return NUM_ACTIONS - 1  # done

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


# minigrid 3.2.0's BabyAI levels the bot plays. Bot success on 8 probe seeds (10_000-10_007) was 8/8
# except OpenDoorsOrderN2Debug 5/8 and N4Debug 3/8 (the Debug variants end the episode at the first
# wrong door, which the bot's route sometimes opens), Unlock 6/8, UnlockToUnlock 5/8 (endless replans
# on the others, see BOT_SEARCHES_PER_STEP) and SynthS5R2 7/8;
# the data keeps successful episodes only.
LEVEL_IDS = (
    "BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToRedBall-v0", "BabyAI-GoToRedBallNoDists-v0",
    "BabyAI-GoToObj-v0", "BabyAI-GoToObjS4-v0", "BabyAI-GoToObjS6-v1", "BabyAI-GoToLocal-v0",
    "BabyAI-GoToLocalS5N2-v0", "BabyAI-GoToLocalS6N2-v0", "BabyAI-GoToLocalS6N3-v0",
    "BabyAI-GoToLocalS6N4-v0", "BabyAI-GoToLocalS7N4-v0", "BabyAI-GoToLocalS7N5-v0",
    "BabyAI-GoToLocalS8N2-v0", "BabyAI-GoToLocalS8N3-v0", "BabyAI-GoToLocalS8N4-v0",
    "BabyAI-GoToLocalS8N5-v0", "BabyAI-GoToLocalS8N6-v0", "BabyAI-GoToLocalS8N7-v0", "BabyAI-GoTo-v0",
    "BabyAI-GoToOpen-v0", "BabyAI-GoToObjMaze-v0", "BabyAI-GoToObjMazeOpen-v0", "BabyAI-GoToObjMazeS4R2-v0",
    "BabyAI-GoToObjMazeS4-v0", "BabyAI-GoToObjMazeS5-v0", "BabyAI-GoToObjMazeS6-v0",
    "BabyAI-GoToObjMazeS7-v0", "BabyAI-GoToImpUnlock-v0", "BabyAI-GoToSeq-v0", "BabyAI-GoToSeqS5R2-v0",
    "BabyAI-GoToRedBlueBall-v0", "BabyAI-GoToDoor-v0", "BabyAI-GoToObjDoor-v0", "BabyAI-Open-v0",
    "BabyAI-OpenRedDoor-v0", "BabyAI-OpenDoor-v0", "BabyAI-OpenDoorDebug-v0", "BabyAI-OpenDoorColor-v0",
    "BabyAI-OpenDoorLoc-v0", "BabyAI-OpenTwoDoors-v0", "BabyAI-OpenRedBlueDoors-v0",
    "BabyAI-OpenRedBlueDoorsDebug-v0", "BabyAI-OpenDoorsOrderN2-v0", "BabyAI-OpenDoorsOrderN4-v0",
    "BabyAI-OpenDoorsOrderN2Debug-v0", "BabyAI-OpenDoorsOrderN4Debug-v0", "BabyAI-Pickup-v0",
    "BabyAI-UnblockPickup-v0", "BabyAI-PickupLoc-v0", "BabyAI-PickupDist-v0", "BabyAI-PickupDistDebug-v0",
    "BabyAI-PickupAbove-v0", "BabyAI-PutNextLocal-v0", "BabyAI-PutNextLocalS5N3-v0",
    "BabyAI-PutNextLocalS6N4-v0", "BabyAI-PutNextS4N1-v0", "BabyAI-PutNextS5N2-v0", "BabyAI-PutNextS5N1-v0",
    "BabyAI-PutNextS6N3-v0", "BabyAI-PutNextS7N4-v0", "BabyAI-Unlock-v0", "BabyAI-UnlockLocal-v0",
    "BabyAI-UnlockLocalDist-v0", "BabyAI-UnlockPickup-v0", "BabyAI-UnlockPickupDist-v0",
    "BabyAI-BlockedUnlockPickup-v0", "BabyAI-UnlockToUnlock-v0", "BabyAI-ActionObjDoor-v0",
    "BabyAI-FindObjS5-v0", "BabyAI-FindObjS6-v0", "BabyAI-FindObjS7-v0", "BabyAI-KeyCorridor-v0",
    "BabyAI-KeyCorridorS3R1-v0", "BabyAI-KeyCorridorS3R2-v0", "BabyAI-KeyCorridorS3R3-v0",
    "BabyAI-KeyCorridorS4R3-v0", "BabyAI-KeyCorridorS5R3-v0", "BabyAI-KeyCorridorS6R3-v0",
    "BabyAI-OneRoomS8-v0", "BabyAI-OneRoomS12-v0", "BabyAI-OneRoomS16-v0", "BabyAI-OneRoomS20-v0",
    "BabyAI-MoveTwoAcrossS5N2-v0", "BabyAI-MoveTwoAcrossS8N9-v0", "BabyAI-Synth-v0", "BabyAI-SynthS5R2-v0",
    "BabyAI-SynthLoc-v0", "BabyAI-SynthSeq-v0", "BabyAI-MiniBossLevel-v0", "BabyAI-BossLevel-v0",
    "BabyAI-BossLevelNoUnlock-v0",
)

# Levels the bot cannot play (0/8 on the probe seeds), and why.
UNSOLVED = {
    "BabyAI-PutNextS5N2Carrying-v0": "starts carrying an object; the bot asserts 'nothing left to explore'",
    "BabyAI-PutNextS6N3Carrying-v0": "starts carrying an object; the bot asserts 'nothing left to explore'",
    "BabyAI-PutNextS7N4Carrying-v0": "starts carrying an object; the bot asserts 'nothing left to explore'",
    "BabyAI-KeyInBox-v0": "the key is inside a box; the bot does not open boxes to look for keys",
}


def dataset_name(level: str) -> str:
  """babyai_<level id without BabyAI- and -vN, lowercased>."""
  return "babyai_" + level.removeprefix("BabyAI-").rsplit("-v", 1)[0].lower()


LEVELS = {dataset_name(level): level for level in LEVEL_IDS}

# (task, default number of train episodes for gato-data): most BabyAI episodes are 4-60 steps. The bot
# wins OpenDoorsOrderN4Debug about 1 time in 8 (4 kept, 28 rejected in a build): fewer episodes keep
# its build well inside generate_episodes' limit of 10 attempts an episode.
_LOW_SUCCESS_EPISODES = {"babyai_opendoorsordern4debug": 200, "babyai_opendoorsordern2debug": 500}
TASKS = [(make_task(name, level), _LOW_SUCCESS_EPISODES.get(name, 1000)) for name, level in LEVELS.items()]
TASKS.append((make_task("babyai_gotoredball_image", LEVELS["babyai_gotoredball"], image=True), 1000))
