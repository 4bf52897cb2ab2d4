"""The episode validator names the task, episode, step and field of every bad input."""

import numpy as np
import pytest

from gato_jax.episodes import ActionSpec, EpisodeError, FieldSpec, TaskSpec, validate_episode

SPEC = TaskSpec("pick_demo", {"mission": FieldSpec("text"), "state": FieldSpec("continuous", (3,)),
                              "grid": {"cells": FieldSpec("discrete", (2, 2), num_values=10)},
                              "view": FieldSpec("image", (16, 32, 3))},
                ActionSpec("discrete", (), (4,)))


def good_episode(t=4):
  rng = np.random.default_rng(0)
  return {"steps": {
      "observation": {"mission": ["pick up the key"] * t, "state": rng.normal(size=(t, 3)),
                      "grid": {"cells": rng.integers(0, 10, (t, 2, 2))},
                      "view": rng.integers(0, 256, (t, 16, 32, 3), dtype=np.uint8)},
      "action": rng.integers(0, 4, t), "reward": np.zeros(t, np.float32),
      "is_first": np.arange(t) == 0, "is_last": np.arange(t) == t - 1, "is_terminal": np.arange(t) == t - 1}}


def test_good_episode_passes_and_spec_round_trips():
  assert validate_episode(good_episode(), SPEC, 7) == 4
  assert TaskSpec.from_dict(SPEC.to_dict()) == SPEC
  assert [p for p, _ in SPEC.observation_fields()] == ["grid/cells", "mission", "state", "view"]


def corrupt(mutate):
  ep = good_episode()
  mutate(ep["steps"])
  return ep


@pytest.mark.parametrize("mutate,pattern", [
    (lambda s: s["observation"]["state"].__setitem__((2, 1), np.nan), r"episode 7, step 2: field 'observation/state': non-finite"),
    (lambda s: s["observation"]["state"].__setitem__((1, 0), np.inf), r"step 1: field 'observation/state'"),
    (lambda s: s["observation"]["grid"]["cells"].__setitem__((3, 0, 1), 10), r"step 3: field 'observation/grid/cells': value outside \[0, 10\)"),
    (lambda s: s["observation"].pop("state"), r"missing \['state'\]"),
    (lambda s: s["observation"].__setitem__("extra", np.zeros(4)), r"unexpected \['extra'\]"),
    (lambda s: s["observation"].__setitem__("view", np.zeros((4, 16, 32, 3), np.float32)), r"'observation/view': dtype float32, expected uint8"),
    (lambda s: s["observation"].__setitem__("view", np.zeros((4, 20, 32, 3), np.uint8)), r"'observation/view': per-step shape \(20, 32, 3\), expected \(16, 32, 3\)"),
    (lambda s: s["action"].__setitem__(1, 4), r"step 1: field 'action': \[4\] is outside the action space"),
    (lambda s: s.__setitem__("action", np.zeros(3, np.int64)), r"field 'action': has 3 steps, expected 4"),
])
def test_bad_input_names_task_episode_step_and_field(mutate, pattern):
  with pytest.raises(EpisodeError, match=r"task 'pick_demo', episode 7") as e:
    validate_episode(corrupt(mutate), SPEC, 7)
  assert e.match(pattern), str(e.value)


def test_empty_episode_and_bad_specs():
  ep = good_episode()
  for key in list(ep["steps"]):
    if key != "observation":
      ep["steps"][key] = ep["steps"][key][:0]
  with pytest.raises(EpisodeError, match="empty"):
    validate_episode(ep, SPEC, 0)
  with pytest.raises(ValueError, match="multiples of 16"):
    FieldSpec("image", (30, 32, 3))
  with pytest.raises(ValueError, match="num_values"):
    FieldSpec("discrete", (2,), num_values=2000)
  with pytest.raises(ValueError, match="low < high"):
    ActionSpec("continuous", (1,), (), (1.0,), (1.0,))


def test_continuous_action_bounds():
  spec = TaskSpec("reach", {"s": FieldSpec("continuous", (2,))}, ActionSpec("continuous", (2,), (), (-1, -1), (1, 1)))
  ep = {"steps": {"observation": {"s": np.zeros((2, 2))}, "action": np.array([[0.5, -0.2], [1.5, 0.0]]),
                  "reward": np.zeros(2), "is_first": [True, False], "is_last": [False, True],
                  "is_terminal": [False, False]}}
  with pytest.raises(EpisodeError, match=r"step 1: field 'action': \[1.5, 0.0\] is outside"):
    validate_episode(ep, spec, "e3")
