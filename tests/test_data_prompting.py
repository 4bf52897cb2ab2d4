"""Windows, prompts and the feature converter on synthetic token streams (no datasets needed)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from gato_jax import features
from gato_jax.data import prompting
from gato_jax.data.feature_converter import GatoFeatureConverter, task_feature_lengths
from gato_jax.tokenizers import TokenKind

STEP_SIZES = [3, 5, 2, 4, 6, 3, 3, 7]


def episode_stream(step_sizes=STEP_SIZES, first_id=1000):
  """Each step: observation tokens, then one ACTION token; ids are unique so slices are identifiable."""
  kinds, timesteps = [], []
  for t, n in enumerate(step_sizes):
    kinds += [TokenKind.OBS_CONTINUOUS] * (n - 1) + [TokenKind.ACTION]
    timesteps += [t] * n
  n = len(kinds)
  return {"tokens": tf.range(first_id, first_id + n, dtype=tf.int32), "kinds": tf.constant(kinds, tf.int32),
          "obs_positions": tf.zeros([n], tf.int32), "timesteps": tf.constant(timesteps, tf.int32)}


def starts_of(step_sizes=STEP_SIZES):
  return np.concatenate([[0], np.cumsum(step_sizes)])


def test_step_starts():
  s = episode_stream()
  np.testing.assert_array_equal(prompting.step_starts(s["timesteps"]).numpy(), starts_of())
  assert prompting.step_starts(tf.zeros([0], tf.int32)).numpy().tolist() == [0]


@pytest.mark.parametrize("room", [1, 9, 20, 33, 200])
def test_window_starts_at_a_step_and_stays_inside(room):
  s = episode_stream()
  n = int(s["tokens"].shape[0])
  starts = starts_of()[:-1]
  seen = set()
  for u in np.linspace(0, 0.999, 40):
    w = prompting.sample_window(s, tf.constant(u, tf.float32), room)
    tokens = w["tokens"].numpy() - 1000
    start = int(tokens[0])
    assert start in starts, "a window begins with a step's first token"
    assert len(tokens) == min(room, n), "inside the episode whenever it is long enough"
    np.testing.assert_array_equal(tokens, np.arange(start, start + len(tokens)))
    seen.add(start)
  eligible = [s0 for s0 in starts if s0 <= max(0, n - room)]
  assert seen == set(eligible), "every eligible step start is drawn"


@pytest.mark.parametrize("budget", [4, 12, 16, 100])
def test_prompt_from_end_is_whole_trailing_steps_within_budget(budget):
  s = episode_stream()
  starts, n = starts_of(), starts_of()[-1]
  ks = set()
  for u in np.linspace(0, 0.999, 30):
    p = prompting.sample_prompt(s, tf.constant(0.0), tf.constant(0.5), tf.constant(u, tf.float32), budget, 0.5)
    tokens = p["tokens"].numpy() - 1000
    assert tokens[-1] == n - 1 and tokens[0] in starts, "ends at the episode's end, whole steps"
    k = len(starts) - 1 - list(starts).index(tokens[0])
    assert len(tokens) <= budget or k == 1
    ks.add(k)
  k_max = max(1, sum(n - s0 <= budget for s0 in starts[:-1]))
  assert ks == set(range(1, k_max + 1)), "k uniform over 1..k_max"


def test_prompt_from_uniform_position_is_whole_steps():
  s = episode_stream()
  starts = list(starts_of())
  firsts = set()
  for ua in np.linspace(0, 0.999, 16):
    for uk in (0.0, 0.5, 0.999):
      p = prompting.sample_prompt(s, tf.constant(0.9), tf.constant(ua, tf.float32), tf.constant(uk, tf.float32),
                                  10, 0.5)
      tokens = p["tokens"].numpy() - 1000
      assert tokens[0] in starts and tokens[-1] + 1 in starts, "a run of whole steps"
      np.testing.assert_array_equal(tokens, np.arange(tokens[0], tokens[-1] + 1))
      assert len(tokens) <= 10 or starts.index(tokens[-1] + 1) - starts.index(tokens[0]) == 1
      firsts.add(int(tokens[0]))
  assert firsts == set(starts[:-1]), "the anchor step is uniform over the episode"


def test_control_sequence_prompt_then_window_padded():
  episode, other = episode_stream(first_id=1000), episode_stream([2, 2, 2, 2], first_id=5000)
  length = 17
  prompted = 0
  for i in range(200):
    out, diag = prompting.control_sequence(episode, other, tf.constant(True), tf.constant([i, 7]), length,
                                           0.25, 0.5, 0.5)
    tokens = out["tokens"].numpy()
    assert tokens.shape == (length,) and out["patches"].shape == (0, 16, 16, 3)
    p = int(diag["prompt_length"])
    assert bool(diag["has_prompt"]) == (p > 0)
    assert np.all(tokens[:p] >= 5000) and np.all(tokens[p:][tokens[p:] > 0] < 5000)
    assert p <= 8, "prompts fit in max_prompt_fraction * L tokens"
    if p:
      prompted += 1
      if bool(diag["prompt_at_end"]):
        assert tokens[p - 1] == 5007, "goal prompts end with the other episode's last token"
  assert 25 <= prompted <= 75  # 25% of 200, well inside 4 standard deviations
  out, diag = prompting.control_sequence(episode, other, tf.constant(False), tf.constant([1, 2]), length,
                                         1.0, 0.5, 0.5)
  assert not bool(diag["has_prompt"]), "no prompt without another episode"


def test_finish_sequence_pads_and_compacts_images():
  kinds = tf.constant([TokenKind.IMAGE, TokenKind.IMAGE, TokenKind.OBS_DISCRETE, TokenKind.SEPARATOR,
                       TokenKind.ACTION], tf.int32)
  patches = tf.reshape(tf.range(5 * 16 * 16 * 3) % 251, [5, 16, 16, 3])
  stream = {"tokens": tf.constant([0, 0, 7, 9, 8]), "kinds": kinds, "obs_positions": tf.constant([0, 1, 2, 0, 0]),
            "patches": tf.cast(patches, tf.uint8), "patch_rows": tf.ones([5, 2], tf.int32),
            "patch_cols": tf.ones([5, 2], tf.int32)}
  out = prompting.finish_sequence(stream, 8)
  assert out["kinds"].numpy().tolist() == [2, 2, 4, 6, 7, 0, 0, 0]
  assert out["patches"].shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(out["patches"].numpy(), stream["patches"].numpy()[:2])
  out = prompting.finish_sequence(stream, 1)
  assert out["patches"].shape == (1, 16, 16, 3), "only the images inside the window"


def test_feature_converter_shifts_masks_and_scatters_patches():
  length = 6
  kinds = [TokenKind.OBS_TEXT, TokenKind.IMAGE, TokenKind.IMAGE, TokenKind.SEPARATOR, TokenKind.ACTION,
           TokenKind.TEXT, TokenKind.PAD]
  tokens = [3, 0, 0, 99, 77, 5, 0]
  patches = np.stack([np.full((16, 16, 3), 11, np.uint8), np.full((16, 16, 3), 22, np.uint8)])
  ex = {"tokens": tf.constant(tokens, tf.int32), "kinds": tf.constant(kinds, tf.int32),
        "obs_positions": tf.constant([0, 1, 2, 0, 0, 0, 0], tf.int32), "patches": tf.constant(patches),
        "patch_rows": tf.constant([[0, 64], [64, 128]], tf.int32), "patch_cols": tf.constant([[0, 128]] * 2, tf.int32),
        "task_index": tf.constant(3, tf.int32)}
  ds = GatoFeatureConverter()(tf.data.Dataset.from_tensors(ex), task_feature_lengths(length))
  out = next(iter(ds.batch(1).as_numpy_iterator()))
  features.check_batch(out, length)
  assert out["tokens"][0].tolist() == tokens[:-1] and out["targets"][0].tolist() == tokens[1:]
  assert out["target_kinds"][0].tolist() == [int(k) for k in kinds[1:]]
  assert out["loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 0], "1 only where the NEXT token is ACTION/TEXT"
  assert out["patches"][0, 1, 0, 0, 0] == 11 and out["patches"][0, 2, 0, 0, 0] == 22
  assert not out["patches"][0, [0, 3, 4, 5]].any()
  assert out["patch_rows"][0, 2].tolist() == [64, 128] and out["patch_rows"][0, 0].tolist() == [0, 0]
  assert out["task_index"].tolist() == [3]
  with pytest.raises(ValueError, match="does not pack"):
    GatoFeatureConverter(pack=True)
