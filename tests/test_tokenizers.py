"""Tokenizers against an independent implementation of the paper's formulas, and NumPy vs TensorFlow."""

import math

import numpy as np
import pytest

from gato_jax import tokenizers as tok
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec
from gato_jax.tokenizers import TokenKind, VocabLayout

LAYOUT = VocabLayout(text_vocab_size=32000)


def reference_continuous_id(x, mu_law=True, mu=100.0, m=256.0, bins=1024, offset=32000):
  """The paper's formula, scalar by scalar with `math`: F(x), clip, 1024 uniform bins, shift."""
  y = math.copysign(math.log(1 + mu * abs(x)) / math.log(1 + m * mu), x) if mu_law else x
  y = min(1.0, max(-1.0, y))
  return offset + min(bins - 1, max(0, math.floor((y + 1) / 2 * bins)))


def reference_inverse(token_id, mu_law=True, mu=100.0, m=256.0, bins=1024, offset=32000):
  centre = -1 + (token_id - offset + 0.5) * 2 / bins
  return math.copysign(((1 + m * mu) ** abs(centre) - 1) / mu, centre) if mu_law else centre


def test_layout_ranges_derive_from_text_vocab():
  assert LAYOUT.continuous_range() == (32000, 33024)
  assert LAYOUT.discrete_range() == (33024, 34048)
  assert LAYOUT.separator_id == 34048
  assert LAYOUT.vocab_size % 128 == 0 and LAYOUT.vocab_size > LAYOUT.separator_id
  small = VocabLayout(text_vocab_size=512)
  assert small.continuous_range() == (512, 1536) and small.separator_id == 2560
  with pytest.raises(ValueError, match="text_vocab_size"):
    VocabLayout(text_vocab_size=0)


@pytest.mark.parametrize("x,expected", [(0.0, 32512), (1.0, 32744), (-1.0, 32279), (0.5, 32710),
                                        (-0.5, 32313), (1e-3, 32516), (-1e-3, 32507), (200.0, 33011),
                                        (-200.0, 32012), (1e9, 33023), (-1e9, 32000)])
def test_specific_values_map_to_expected_ids(x, expected):
  assert reference_continuous_id(x) == expected
  assert int(tok.tokenize_continuous(np.array([x]), LAYOUT)[0]) == expected


def test_no_mu_law_bins_unit_interval():
  xs = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -3.0])
  got = tok.tokenize_continuous(xs, LAYOUT, mu_law=False)
  assert got.tolist() == [reference_continuous_id(x, mu_law=False) for x in xs]
  assert got.tolist() == [32000, 32256, 32512, 32768, 33023, 33023, 32000]  # clipped at the ends


def test_mu_law_round_trip_and_reference():
  x = np.random.default_rng(0).normal(scale=50, size=1000)
  np.testing.assert_allclose(tok.mu_law_decode(tok.mu_law_encode(x)), x, rtol=1e-9, atol=1e-9)
  ref = [math.copysign(math.log(1 + 100 * abs(v)) / math.log(1 + 25600), v) for v in x[:50]]
  np.testing.assert_allclose(tok.mu_law_encode(x[:50]), ref, rtol=1e-12)


@pytest.mark.parametrize("mu_law", [True, False])
def test_decode_encode_within_half_a_bin(mu_law):
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, 5000) if not mu_law else rng.normal(scale=20, size=5000)
  ids = tok.tokenize_continuous(x, LAYOUT, mu_law=mu_law)
  back = tok.detokenize_continuous(ids, LAYOUT, mu_law=mu_law)
  np.testing.assert_allclose(back, [reference_inverse(i, mu_law) for i in ids], rtol=1e-9, atol=1e-12)
  # Half a bin, measured in the companded space (where the bins are uniform).
  f = (lambda v: tok.mu_law_encode(v)) if mu_law else (lambda v: v)
  inside = np.abs(f(x)) < 1
  assert np.all(np.abs(f(back) - f(x))[inside] <= 1 / 1024 + 1e-9)


def test_discrete_and_bad_values():
  assert tok.tokenize_discrete(np.array([[0, 5], [1023, 2]]), LAYOUT).tolist() == [[33024, 33029], [34047, 33026]]
  small = VocabLayout(text_vocab_size=128, num_discrete_values=16)
  wide = FieldSpec("discrete", (1,), num_values=20)  # more values than `small` has discrete ids
  for value, field, layout in (([16], wide, small), ([-1], wide, small),
                               ([3], FieldSpec("discrete", (1,), num_values=3), LAYOUT)):
    with pytest.raises(ValueError, match=r"obs/d: values .* outside \[0, "):
      tok.tokenize_field(np.array(value), field, layout, name="obs/d")
  with pytest.raises(ValueError, match="obs/d: expected integers"):
    tok.tokenize_field(np.array([1.0]), FieldSpec("discrete", (1,), num_values=3), LAYOUT, name="obs/d")
  for bad in ([0.0, np.nan], [np.inf, 1.0]):
    with pytest.raises(ValueError, match="obs/x: non-finite"):
      tok.tokenize_field(np.array(bad), FieldSpec("continuous", (2,)), LAYOUT, name="obs/x")
  with pytest.raises(ValueError, match="action: non-finite"):
    tok.tokenize_action(np.array([np.nan, 0.5]), make_spec().action, LAYOUT)
  with pytest.raises(ValueError, match="outside the action space"):
    tok.tokenize_action(7, make_spec(action="discrete").action, LAYOUT)


def test_image_patches_round_trip_and_raster_order():
  img = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
  patches = tok.image_to_patches(img)
  assert patches.shape == (6, 16, 16, 3) and patches.dtype == np.uint8
  np.testing.assert_array_equal(patches[1], img[0:16, 16:32])  # raster: row 0, column 1
  np.testing.assert_array_equal(patches[3], img[16:32, 0:16])
  np.testing.assert_array_equal(tok.patches_to_image(patches, 32, 48), img)
  rows, cols = tok.patch_intervals(32, 48)
  assert rows.tolist() == [[0, 64]] * 3 + [[64, 128]] * 3
  assert cols.tolist() == [[0, 42], [42, 85], [85, 128]] * 2
  field = FieldSpec("image", (32, 32, 3))
  with pytest.raises(ValueError, match="obs/view: image sides must be multiples of 16"):
    tok.tokenize_field(np.zeros((30, 32, 3), np.uint8), field, LAYOUT, name="obs/view")
  with pytest.raises(ValueError, match="obs/view: expected an HxWx3 uint8 image"):
    tok.tokenize_field(np.zeros((32, 32, 3), np.float32), field, LAYOUT, name="obs/view")


def make_spec(with_text=False, with_image=False, action="continuous"):
  obs = {"b_joints": FieldSpec("continuous", (2, 2)), "a_grid": FieldSpec("discrete", (3,), num_values=11),
         "c": {"vel": FieldSpec("continuous", (1,), mu_law=False)}}
  if with_text:
    obs["mission"] = FieldSpec("text")
  if with_image:
    obs["view"] = FieldSpec("image", (32, 16, 3))
  actions = {"continuous": ActionSpec("continuous", (2,), (), (-2.0, 0.0), (2.0, 1.0)),
             "discrete": ActionSpec("discrete", (), (7,)),
             "multi_discrete": ActionSpec("multi_discrete", (2,), (3, 5))}
  return TaskSpec("unit", obs, actions[action])


def make_obs(rng, with_text=False, with_image=False):
  obs = {"b_joints": rng.normal(size=(2, 2)), "a_grid": rng.integers(0, 11, 3),
         "c": {"vel": rng.uniform(-1, 1, 1)}}
  if with_text:
    obs["mission"] = "go to the red ball"
  if with_image:
    obs["view"] = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
  return obs


def test_timestep_key_order_and_separator():
  rng = np.random.default_rng(3)
  spec = make_spec()
  obs = make_obs(rng)
  s = tok.tokenize_timestep(obs, np.array([0.0, 1.0]), spec, LAYOUT)
  # Lexicographic: a_grid (3), b_joints (4, row-major), c/vel (1), separator, 2 actions.
  assert [p for p, _ in spec.observation_fields()] == ["a_grid", "b_joints", "c/vel"]
  expected = ([33024 + v for v in obs["a_grid"]] + [reference_continuous_id(v) for v in obs["b_joints"].ravel()]
              + [reference_continuous_id(obs["c"]["vel"][0], mu_law=False)] + [LAYOUT.separator_id]
              + [reference_continuous_id(0.0, mu_law=False), reference_continuous_id(1.0, mu_law=False)])
  assert s["tokens"].tolist() == expected
  assert s["kinds"].tolist() == [TokenKind.OBS_DISCRETE] * 3 + [TokenKind.OBS_CONTINUOUS] * 5 + [
      TokenKind.SEPARATOR] + [TokenKind.ACTION] * 2
  assert s["obs_positions"].tolist() == list(range(8)) + [0, 0, 0]


@pytest.mark.parametrize("kind", ["continuous", "discrete", "multi_discrete"])
def test_action_round_trip(kind):
  spec = make_spec(action=kind).action
  rng = np.random.default_rng(4)
  for _ in range(20):
    if kind == "continuous":
      a = rng.uniform(spec.low, spec.high)
    elif kind == "discrete":
      a = int(rng.integers(0, 7))
    else:
      a = rng.integers(0, [3, 5])
    ids = tok.tokenize_action(a, spec, LAYOUT)
    for i, (lo, hi) in zip(ids, tok.action_token_ranges(spec, LAYOUT)):
      assert lo <= i < hi
    back = tok.action_from_tokens(ids, spec, LAYOUT)
    if kind == "continuous":
      half_bin = (np.array(spec.high) - np.array(spec.low)) / 1024
      assert np.all(np.abs(back - a) <= half_bin / 2 + 1e-6)
    else:
      np.testing.assert_array_equal(back, a)
  with pytest.raises(ValueError):
    tok.action_from_tokens([LAYOUT.discrete_offset + 9], make_spec(action="discrete").action, LAYOUT)


def test_action_spec_from_gym_spaces():
  gym = pytest.importorskip("gymnasium")
  assert ActionSpec.from_gym_space(gym.spaces.Discrete(3)).num_values == (3,)
  box = ActionSpec.from_gym_space(gym.spaces.Box(-2, 2, (1,)))
  assert box.kind == "continuous" and box.low == (-2.0,)
  assert ActionSpec.from_gym_space(gym.spaces.MultiDiscrete([2, 4])).num_values == (2, 4)


@pytest.fixture(scope="module")
def text_tokenizer(tmp_path_factory):
  import sentencepiece as spm
  d = tmp_path_factory.mktemp("spm")
  words = "go to the red blue green ball box key door open pick up put next a an and then".split()
  rng = np.random.default_rng(0)
  corpus = d / "corpus.txt"
  corpus.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(500)))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "m"), vocab_size=40,
                                 model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 minloglevel=2)
  return tok.TextTokenizer(str(d / "m.model"))


def test_text_field_tokenizes_as_observation_text(text_tokenizer):
  spec = make_spec(with_text=True)
  s = tok.tokenize_observation(make_obs(np.random.default_rng(5), with_text=True), spec, LAYOUT, text_tokenizer)
  n_text = len(text_tokenizer.encode("go to the red ball"))
  assert n_text > 0
  start = 3 + 4 + 1  # after a_grid, b_joints, c/vel: "mission" sorts last
  assert s["kinds"][start:start + n_text].tolist() == [TokenKind.OBS_TEXT] * n_text
  assert text_tokenizer.decode(s["tokens"][start:start + n_text]) == "go to the red ball"
  assert s["kinds"][-1] == TokenKind.SEPARATOR


def test_numpy_and_tensorflow_agree_token_for_token(text_tokenizer):
  tf = pytest.importorskip("tensorflow")
  from gato_jax.tokenizers import tf_ops
  rng = np.random.default_rng(6)
  for action in ("continuous", "discrete", "multi_discrete"):
    spec = make_spec(with_text=True, with_image=True, action=action)
    steps = [make_obs(rng, with_text=True, with_image=True) for _ in range(5)]
    acts = [tok.action_from_tokens(tok.tokenize_action(
        rng.uniform(spec.action.low, spec.action.high) if action == "continuous" else
        (int(rng.integers(0, 7)) if action == "discrete" else rng.integers(0, [3, 5])),
        spec.action, LAYOUT), spec.action, LAYOUT) for _ in steps]
    expected = tok.stream.concat(tok.tokenize_timestep(o, a, spec, LAYOUT, text_tokenizer)
                                  for o, a in zip(steps, acts))
    from gato_jax.episodes import stack_steps
    stacked = stack_steps([{"observation": o, "action": np.asarray(a)} for o, a in zip(steps, acts)])
    stacked["observation"]["mission"] = tf.constant(stacked["observation"]["mission"])
    got = tf_ops.tokenize_episode(stacked, spec, LAYOUT, text_tokenizer)
    for key in ("tokens", "kinds", "obs_positions", "patches", "patch_rows", "patch_cols"):
      np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=f"{action}: {key}")
    per_step = len(expected["tokens"]) // 5
    assert got["timesteps"].numpy().tolist() == sorted(list(range(5)) * per_step)


def test_one_transform_gives_the_same_ids_under_numpy_and_tensorflow():
  """The transforms are written once against an array module: TensorFlow's NumPy API (the input
  pipeline) must reproduce NumPy's ids, dtypes and patches exactly, extremes included."""
  tf = pytest.importorskip("tensorflow")
  tnp = tf.experimental.numpy
  from gato_jax.tokenizers import stream
  x = np.concatenate([np.random.default_rng(7).standard_cauchy(20000), [0.0, -0.0, 1e300, -1e300]])
  for mu_law in (True, False):
    got = tok.tokenize_continuous(tf.constant(x), LAYOUT, mu_law, xp=tnp)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), tok.tokenize_continuous(x, LAYOUT, mu_law))
  spec = make_spec().action
  a = np.random.default_rng(9).uniform(-3, 3, (50, 2))
  np.testing.assert_array_equal(tok.action_ids(tf.constant(a), spec, LAYOUT, tnp).numpy(),
                                tok.action_ids(a, spec, LAYOUT))
  img = np.random.default_rng(8).integers(0, 256, (48, 32, 3), dtype=np.uint8)
  expected = stream.of_image(img, 128, 4)
  got = stream.of_image(tf.constant(img), 128, 4, tnp)
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    assert got[key].dtype == tf.as_dtype(value.dtype), key
    np.testing.assert_array_equal(got[key].numpy(), value, err_msg=key)
  np.testing.assert_array_equal(tok.image_to_patches(np.stack([img, img[::-1]]))[1], tok.image_to_patches(img[::-1]))
