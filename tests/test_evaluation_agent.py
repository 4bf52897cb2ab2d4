"""The acting agent: restricted sampling, action decoding against the tokenizer's inverse, the KV-cache
loop (with rolling) against re-encoding the whole window, prompts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec
from gato_jax.acting import agent as agent_lib, decode
from testlib import eval_testing as testing
from gato_jax.tokenizers import (TokenKind, VocabLayout, action_from_tokens, action_token_ranges,
                                 tokenize_observation)
from gato_jax.tokenizers.timestep import tokenize_action

SPECS = {
    "discrete": ActionSpec("discrete", (), (5,)),
    "multi_discrete": ActionSpec("multi_discrete", (3,), (4, 2, 7)),
    "continuous": ActionSpec("continuous", (2, 2), (), (-2.0, 0.0, -1.0, 5.0), (2.0, 1.0, 1.0, 9.0)),
}
# Every observation modality but text: an image (2 patches), a nested discrete grid, continuous values.
OBSERVATION = {"view": FieldSpec("image", (16, 32, 3)), "grid": {"cells": FieldSpec("discrete", (2, 2), num_values=9)},
               "state": FieldSpec("continuous", (3,))}


@pytest.fixture(scope="module")
def config():
  return testing.tiny_config(context=96)


@pytest.fixture(scope="module")
def model(config):
  return testing.tiny_model(config)


@pytest.fixture(scope="module")
def layout(config):
  return VocabLayout.from_config(config.vocab)


def observation(rng):
  return {"view": rng.integers(0, 256, (16, 32, 3), dtype=np.uint8),
          "grid": {"cells": rng.integers(0, 9, (2, 2)).astype(np.int32)},
          "state": rng.normal(scale=3.0, size=3).astype(np.float32)}


def test_sample_restricted_stays_in_range_and_greedy_is_the_masked_argmax():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 50)).astype(np.float32))
  logits = logits.at[:, 0].set(100.0)  # the global argmax lies outside every range below
  lo, hi = 10, 17
  greedy = decode.sample_restricted(logits, lo, hi, jax.random.key(0), 1.0, greedy=True)
  np.testing.assert_array_equal(greedy, lo + np.argmax(np.asarray(logits)[:, lo:hi], axis=1))
  sample = jax.jit(jax.vmap(lambda key: decode.sample_restricted(logits, lo, hi, key, 1000.0, greedy=False)))
  draws = np.asarray(sample(jax.random.split(jax.random.key(1), 200)))
  assert draws.min() >= lo and draws.max() < hi
  assert len(np.unique(draws)) == hi - lo  # a high temperature reaches every allowed id


@pytest.mark.parametrize("kind", list(SPECS))
def test_actions_are_the_tokenizers_inverse_of_the_sampled_ids(kind, model, layout):
  spec = TaskSpec(f"decode_{kind}", OBSERVATION, SPECS[kind])
  agent = agent_lib.GatoAgent(model, layout, spec, context_length=96, greedy=False, temperature=2.0, seed=3)
  agent.reset([None, None, None])
  rng = np.random.default_rng(1)
  ranges = action_token_ranges(spec.action, layout)
  for _ in range(3):
    actions = agent.act([observation(rng), observation(rng), None])
    assert actions[2] is None
    for row in range(2):
      ids = agent._steps[row][-1]["tokens"][-spec.action.size:]  # pylint: disable=protected-access
      assert all(lo <= i < hi for i, (lo, hi) in zip(ids, ranges))
      expected = action_from_tokens(ids, spec.action, layout)
      np.testing.assert_array_equal(actions[row], expected)
      np.testing.assert_array_equal(tokenize_action(actions[row], spec.action, layout), ids)  # round trip
      if kind == "continuous":
        low, high = np.reshape(spec.action.low, (2, 2)), np.reshape(spec.action.high, (2, 2))
        assert actions[row].shape == (2, 2) and np.all(actions[row] >= low) and np.all(actions[row] <= high)
  assert not agent._steps[2]  # pylint: disable=protected-access  # a finished episode records nothing


def test_the_context_is_the_tokenized_history(model, layout):
  spec = TaskSpec("history", OBSERVATION, SPECS["multi_discrete"])
  agent = agent_lib.GatoAgent(model, layout, spec, context_length=96, greedy=True)
  agent.reset([None])
  rng = np.random.default_rng(2)
  obs = observation(rng)
  action = agent.act([obs])[0]
  step = agent._steps[0][0]  # pylint: disable=protected-access
  expected = tokenize_observation(obs, spec, layout, max_obs_positions=512, num_patch_positions=128)
  n = len(expected["tokens"])
  for key, value in expected.items():
    np.testing.assert_array_equal(step[key][:n], value)
  assert step["kinds"][n - 1] == TokenKind.SEPARATOR
  assert list(step["kinds"][n:]) == [TokenKind.ACTION] * 3
  np.testing.assert_array_equal(step["tokens"][n:], tokenize_action(action, spec.action, layout))


@pytest.mark.parametrize("kind", ["multi_discrete", "continuous"])
def test_kv_cache_with_rolling_acts_like_re_encoding_the_window(kind, model, layout):
  """roll_keep=1 makes every re-prefill keep as much as fits, the uncached window rule: then the two
  paths see the same tokens at every step, and greedy decoding must agree token for token."""
  spec = TaskSpec(f"cache_{kind}", OBSERVATION, SPECS[kind])
  rng = np.random.default_rng(5)
  demo = {"steps": {"observation": {"view": rng.integers(0, 256, (3, 16, 32, 3), dtype=np.uint8),
                                    "grid": {"cells": rng.integers(0, 9, (3, 2, 2)).astype(np.int32)},
                                    "state": rng.normal(size=(3, 3)).astype(np.float32)},
                    "action": np.stack([_random_action(spec.action, rng) for _ in range(3)]),
                    "reward": np.zeros(3, np.float32)}}
  observations = [[observation(rng) for _ in range(2)] for _ in range(12)]
  actions = {}
  rolls = {}
  for use_cache in (True, False):
    agent = agent_lib.GatoAgent(model, layout, spec, context_length=64, greedy=True, roll_keep=1.0,
                                prompt_tokens=24, use_cache=use_cache)
    prompt = agent.prompt_from_episode(demo)
    assert 0 < sum(len(s["tokens"]) for s in prompt) <= 24
    agent.reset([prompt, None])
    actions[use_cache] = [agent.act(obs) for obs in observations]
    rolls[use_cache] = agent.rolls
    if use_cache:  # position_embedding "none": the prompt stayed in the first slots, the steps were recomputed
      assert agent._prefix == 16, agent._prefix  # pylint: disable=protected-access  # its tokens rounded up to 16
  assert rolls[True] >= 3  # the 64-token window filled up and was re-prefilled several times
  for cached, uncached in zip(actions[True], actions[False]):
    for a, b in zip(cached, uncached):
      np.testing.assert_array_equal(a, b)


def _random_action(spec: ActionSpec, rng):
  if spec.kind == "continuous":
    return rng.uniform(spec.low, spec.high).reshape(spec.shape).astype(np.float32)
  return np.array([rng.integers(n) for n in spec.num_values]).reshape(spec.shape)


def test_prompt_is_the_end_of_the_demonstration(model, layout):
  spec = TaskSpec("prompt", {"state": FieldSpec("continuous", (3,))}, ActionSpec("discrete", (), (2,)))
  agent = agent_lib.GatoAgent(model, layout, spec, context_length=96, prompt_tokens=11)
  steps = {"observation": {"state": np.arange(30, dtype=np.float32).reshape(10, 3)},
           "action": np.arange(10) % 2, "reward": np.zeros(10)}
  prompt = agent.prompt_from_episode({"steps": steps})
  assert len(prompt) == 2  # 5 tokens a step (3 values, separator, action): two whole steps fit in 11
  np.testing.assert_array_equal(prompt[-1]["tokens"], agent.timestep_stream({"steps": steps}, 9)["tokens"])
  np.testing.assert_array_equal(prompt[0]["tokens"][:3], agent.timestep_stream({"steps": steps}, 8)["tokens"][:3])


def test_bad_settings_are_refused(model, layout):
  spec = TaskSpec("bad", {"state": FieldSpec("continuous", (80,))}, ActionSpec("discrete", (), (2,)))
  with pytest.raises(ValueError, match="temperature must be > 0"):
    agent_lib.GatoAgent(model, layout, spec, context_length=64, greedy=False, temperature=0.0)
  agent = agent_lib.GatoAgent(model, layout, spec, context_length=64)
  agent.reset([None])
  with pytest.raises(ValueError, match="one timestep is 82 tokens, more than the agent's context of 64"):
    agent.act([{"state": np.zeros(80, np.float32)}])
  with pytest.raises(ValueError, match="got 2 observations for 1 episodes"):
    agent.act([None, None])


def test_more_image_tokens_than_the_model_encodes_is_refused(config, layout):
  capped = testing.tiny_config(context=96)
  capped.model.max_image_tokens = 1  # training's per-sequence cap; this task has 2 patches a step
  model = testing.tiny_model(capped)
  agent = agent_lib.GatoAgent(model, layout, TaskSpec("images", OBSERVATION, SPECS["discrete"]), context_length=96)
  agent.reset([None])
  with pytest.raises(ValueError, match=r"feeds 2 image tokens at once but config.model.max_image_tokens=1"):
    agent.act([observation(np.random.default_rng(0))])
