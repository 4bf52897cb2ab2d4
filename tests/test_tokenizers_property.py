"""Property test: acting's per-step tokenization (NumPy) and the SeqIO pipeline's whole-episode one
(TensorFlow) agree token for token on randomly drawn TaskSpecs and values, extremes included. Both run
the same transforms and stream builders (values.py, timestep.py, stream.py, under NumPy or TensorFlow's
NumPy API); what this test holds equal is the array modules' arithmetic and the two assemblies (one
timestep at a time vs ragged rows of a whole episode)."""

import numpy as np
import pytest

from gato_jax import tokenizers as tok
from gato_jax.episodes import PATCH_SIZE, ActionSpec, FieldSpec, TaskSpec, stack_steps

tf = pytest.importorskip("tensorflow")
from gato_jax.tokenizers import tf_ops  # pylint: disable=g-import-not-at-top

LAYOUT = tok.VocabLayout(text_vocab_size=128, num_continuous_bins=1024, num_discrete_values=1024)
NUM_SPECS = 40


def random_field(rng) -> FieldSpec:
  modality = rng.choice(["continuous", "continuous", "discrete", "image"])
  if modality == "image":
    return FieldSpec("image", (PATCH_SIZE * int(rng.integers(1, 4)), PATCH_SIZE * int(rng.integers(1, 4)), 3))
  shape = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, 3))))
  if modality == "discrete":
    return FieldSpec("discrete", shape, num_values=int(rng.integers(2, 1025)))
  return FieldSpec("continuous", shape, mu_law=bool(rng.integers(0, 2)))


def random_tree(rng, depth: int = 0) -> dict:
  tree = {}
  for i in range(int(rng.integers(1, 4))):
    key = f"{'abcdefgh'[int(rng.integers(0, 8))]}{i}"
    tree[key] = random_tree(rng, depth + 1) if depth < 1 and rng.uniform() < 0.3 else random_field(rng)
  return tree


def random_action(rng) -> ActionSpec:
  kind = rng.choice(["continuous", "discrete", "multi_discrete"])
  if kind == "discrete":
    return ActionSpec("discrete", (), (int(rng.integers(2, 20)),))
  if kind == "multi_discrete":
    n = int(rng.integers(2, 4))
    return ActionSpec("multi_discrete", (n,), tuple(int(v) for v in rng.integers(2, 9, n)))
  n = int(rng.integers(1, 5))
  low = rng.uniform(-5, 0, n)
  return ActionSpec("continuous", (n,), (), tuple(low.tolist()), tuple((low + rng.uniform(0.1, 9, n)).tolist()))


def random_value(field: FieldSpec, rng):
  if field.modality == "image":
    return rng.integers(0, 256, field.shape, dtype=np.uint8)
  if field.modality == "discrete":
    return rng.integers(0, field.num_values, field.shape).astype(np.int32)
  # Heavy tails, exact zeros and values far past the companding range (they saturate).
  x = rng.standard_cauchy(field.shape) * rng.choice([1e-3, 1.0, 1e3])
  return np.where(rng.uniform(size=field.shape) < 0.1, 0.0, x).astype(np.float32)


def random_action_value(spec: ActionSpec, rng):
  if spec.kind == "continuous":
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    edge = rng.uniform(size=spec.shape) < 0.2  # exactly on the bounds now and then
    return np.where(edge, np.where(rng.uniform(size=spec.shape) < 0.5, low, high),
                    rng.uniform(low, high)).astype(np.float32)
  if spec.kind == "discrete":
    return np.int32(rng.integers(0, spec.num_values[0]))
  return rng.integers(0, spec.num_values).astype(np.int32)


def observation(tree, rng):
  return {k: observation(v, rng) if isinstance(v, dict) else random_value(v, rng) for k, v in tree.items()}


@pytest.mark.parametrize("seed", range(NUM_SPECS))
def test_random_specs_tokenize_identically_in_numpy_and_tensorflow(seed):
  rng = np.random.default_rng([2026, seed])
  spec = TaskSpec(f"random_{seed}", random_tree(rng), random_action(rng))
  num_steps = int(rng.integers(1, 5))
  steps = [{"observation": observation(spec.observation, rng), "action": random_action_value(spec.action, rng)}
           for _ in range(num_steps)]
  expected = tok.stream.concat(tok.tokenize_timestep(s["observation"], s["action"], spec, LAYOUT)
                               for s in steps)
  got = tf_ops.tokenize_episode(stack_steps(steps), spec, LAYOUT)
  has_images = any(f.modality == "image" for _, f in spec.observation_fields())
  keys = ("tokens", "kinds", "obs_positions") + (("patches", "patch_rows", "patch_cols") if has_images else ())
  for key in keys:
    np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=f"{spec}: {key}")
  per_step = len(expected["tokens"]) // num_steps
  assert got["timesteps"].numpy().tolist() == sorted(list(range(num_steps)) * per_step)
