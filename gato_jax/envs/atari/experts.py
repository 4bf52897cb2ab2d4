"""Atari experts that read the emulator's RAM: the ball's position, and where it will cross the paddle.

Pong and Breakout: when the ball heads for the player, the expert copies the emulator (state and RNG),
plays no-ops until the ball reaches the paddle's line, reads the ball's coordinate there from RAM,
restores the copy, and steers the paddle to meet it. The copy is restored with its RNG, so the
look-ahead changes nothing in the episode: every episode is still a function of its seed. Freeway:
the chicken crosses unless a car in the lane ahead is about to reach its column (car x from RAM).
RAM addresses are the ones the Atari Annotated RAM Interface (AtariARI, Anand et al. 2019) lists.
Actions are indices of ALE's full 18-action set (NOOP 0, FIRE 1, UP 2, RIGHT 3, LEFT 4, DOWN 5).
"""

import numpy as np

NOOP, FIRE, UP, RIGHT, LEFT, DOWN = 0, 1, 2, 3, 4, 5

# Pong: the player's paddle is on the right; RIGHT moves it up, LEFT down.
PONG_BALL_X, PONG_BALL_Y, PONG_PLAYER_Y = 49, 54, 51
PONG_PADDLE_X = 188  # the ball's x where the player's paddle meets it
# Breakout: paddle and ball x, ball y (rows grow downwards).
BREAKOUT_PADDLE_X, BREAKOUT_BALL_X, BREAKOUT_BALL_Y = 72, 99, 101
# Freeway: the player's chicken y (grows upwards), the x of the car in each of the 10 lanes.
FREEWAY_CHICKEN_Y, FREEWAY_CARS_X = 14, slice(108, 118)


def _ram(env) -> np.ndarray:
  return env.unwrapped.ale.getRAM()


def look_ahead(env, stop, max_frames: int = 400):
  """The RAM at the first frame where `stop(ram, previous_ram)` holds while playing no-ops (None if
  it never does within `max_frames` or a life ends); the emulator is left exactly as it was."""
  ale = env.unwrapped.ale
  state = ale.cloneState(include_rng=True)
  lives = ale.lives()
  prev = ale.getRAM().copy()
  found = None
  try:
    for _ in range(max_frames):
      ale.act(NOOP)
      ram = ale.getRAM()
      if stop(ram, prev):
        found = ram.copy()
        break
      if ale.lives() < lives or ale.game_over():
        break
      prev = ram.copy()
  finally:
    ale.restoreState(state)
  return found


def _steer(position: int, target: float, dead_zone: float, towards_low: int, towards_high: int) -> int:
  if position > target + dead_zone:
    return towards_low
  if position < target - dead_zone:
    return towards_high
  return NOOP


def _rollout(env, act, max_steps: int, frameskip: int = 4) -> tuple[float, int]:
  """(reward, steps) of playing `act(ram)` from the current state until a reward or a lost life; the
  emulator (and its RNG) is restored afterwards."""
  ale = env.unwrapped.ale
  state = ale.cloneState(include_rng=True)
  lives = ale.lives()
  try:
    for step in range(max_steps):
      action = act(ale.getRAM())
      reward = sum(ale.act(action) for _ in range(frameskip))
      if reward or ale.lives() < lives or ale.game_over():
        return float(reward), step
    return 0.0, max_steps
  finally:
    ale.restoreState(state)


def pong_expert(env, offsets=(16.0, 2.0, 24.0, 9.0, 20.0, 12.0), dead_zone: float = 3.0,
                horizon: int = 150):
  """When the ball heads for the player, tries each paddle offset (where on the paddle to meet the
  ball) in the emulator until the point is decided, and keeps the first that wins it (else the one
  that keeps the rally going longest); then meets the ball where the look-ahead says it arrives."""
  plan = None  # (intercept row, offset) for the ball now coming
  last_x = None

  def arrives(ram, prev):  # the ball turns back (hit) or passes the player's paddle
    return int(ram[PONG_BALL_X]) < int(prev[PONG_BALL_X]) or int(ram[PONG_BALL_X]) >= PONG_PADDLE_X

  def steer(ram, target):
    return _steer(int(ram[PONG_PLAYER_Y]), target, dead_zone, RIGHT, LEFT)

  def choose(env, intercept):
    best, best_steps = offsets[0], -1
    for offset in offsets:
      reward, steps = _rollout(env, lambda ram, o=offset: steer(ram, _target(ram, intercept, o)), horizon)
      if reward > 0:
        return offset
      if reward == 0 and steps > best_steps:
        best, best_steps = offset, steps
    return best

  def _target(ram, intercept, offset):
    # Before the hit aim at the intercept; once the ball turns back, follow it (the next plan).
    return intercept - offset

  def policy(observation, raw_obs, env):
    nonlocal plan, last_x
    del observation, raw_obs
    ram = _ram(env)
    x, y = int(ram[PONG_BALL_X]), int(ram[PONG_BALL_Y])
    if last_x is None or x <= last_x:
      plan = None  # the ball is not coming: plan when it does
    elif plan is None:
      hit = look_ahead(env, arrives)
      intercept = float(hit[PONG_BALL_Y]) if hit is not None else float(y)
      plan = (intercept, choose(env, intercept))
    last_x = x
    target = plan[0] - plan[1] if plan is not None else (y if y > 0 else 120.0) - 12.0
    return steer(ram, target)

  return policy


BREAKOUT_PADDLE_ROW = 175  # the ball's y where the paddle meets it


def breakout_expert(env, offset: float = 5.0, dead_zone: float = 2.0):
  """Serves (FIRE) when no ball is in play; while the ball falls, moves the paddle under the point
  where the look-ahead says it reaches the paddle's row, else follows the ball."""
  plan = None
  last_y = None

  def arrives(ram, prev):  # the ball reaches the paddle's row or turns back up
    y = int(ram[BREAKOUT_BALL_Y])
    return y >= BREAKOUT_PADDLE_ROW or (0 < y < int(prev[BREAKOUT_BALL_Y]))

  def policy(observation, raw_obs, env):
    nonlocal plan, last_y
    del observation, raw_obs
    ram = _ram(env)
    x, y = int(ram[BREAKOUT_BALL_X]), int(ram[BREAKOUT_BALL_Y])
    if y == 0:  # no ball in play
      plan, last_y = None, None
      return FIRE
    if last_y is None or y <= last_y or y >= BREAKOUT_PADDLE_ROW:
      plan = None  # rising (or past the row): plan on the way down
    elif plan is None:
      hit = look_ahead(env, arrives)
      plan = float(hit[BREAKOUT_BALL_X]) if hit is not None and int(hit[BREAKOUT_BALL_Y]) > 0 else None
    last_y = y
    target = (plan if plan is not None else float(x)) - offset
    return _steer(int(ram[BREAKOUT_PADDLE_X]), target, dead_zone, LEFT, RIGHT)

  return policy


def _progress(env, first: int, then: int, steps: int, frameskip: int = 4) -> float:
  """Freeway: chicken rows gained (a crossing counts as a full road) by `first` then `then` for
  `steps` steps; the emulator is restored afterwards."""
  ale = env.unwrapped.ale
  state = ale.cloneState(include_rng=True)
  try:
    start = int(ale.getRAM()[FREEWAY_CHICKEN_Y])
    crossed = 0.0
    for step in range(steps):
      action = first if step == 0 else then
      crossed += sum(ale.act(action) for _ in range(frameskip))
    return crossed * FREEWAY_ROAD + int(ale.getRAM()[FREEWAY_CHICKEN_Y]) - start
  finally:
    ale.restoreState(state)


FREEWAY_ROAD = 170  # chicken rows from the kerb to the far side
FREEWAY_SPEED = 4  # rows a step while nothing is in the way


def freeway_expert(env, horizon: int = 10):
  """Crosses (UP) unless the emulator says that waiting or stepping back this step, then going up,
  gets the chicken further in `horizon` steps (a car would knock it back)."""
  del env

  def policy(observation, raw_obs, env):
    del observation, raw_obs
    up = _progress(env, UP, UP, horizon)
    if up >= FREEWAY_SPEED * (horizon - 1):  # a clear road: the others cannot do better
      return UP
    gains = {UP: up, NOOP: _progress(env, NOOP, UP, horizon), DOWN: _progress(env, DOWN, UP, horizon)}
    return max(gains, key=lambda a: (gains[a], a == UP))

  return policy
