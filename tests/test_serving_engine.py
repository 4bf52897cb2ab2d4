"""gato-serve's engine in process: sessions that roll their windows together in more rows than one
re-prefill call takes (engine.PREFILL_POSITIONS) are refilled in several calls and act exactly as when
one call refills them all."""

import numpy as np

from gato_jax.acting import stepping
from gato_jax.acting.prompts import StepTokenizer
from gato_jax.serving import engine as engine_lib
from gato_jax.tokenizers import VocabLayout
from testlib import eval_testing as testing

SESSIONS, STEPS, CONTEXT = 6, 14, 64  # a CartPole step is 6 tokens: every session rolls once or twice


def _episodes(model, layout, monkeypatch, prefill_positions: int):
  """Actions [steps, sessions] of SESSIONS lockstep sessions, and the rows of each re-prefill call."""
  monkeypatch.setattr(engine_lib, "PREFILL_POSITIONS", prefill_positions)
  tokenizer = StepTokenizer.for_model(model.options, layout, stepping.task_spec("cartpole"))
  engine = engine_lib.Engine(model, layout, max_sessions=8, context_length=CONTEXT, prompt_tokens=0, greedy=True,
                             temperature=1.0, tokenizer_for=lambda task: tokenizer)
  extend, rows = engine._extend, []  # pylint: disable=protected-access

  def counting_extend(params, pool, slots, *args, **kwargs):
    rows.append(int(slots.shape[0]))
    return extend(params, pool, slots, *args, **kwargs)

  engine._extend = counting_extend  # pylint: disable=protected-access
  try:
    ids = [engine.create("cartpole", seed=i).id for i in range(SESSIONS)]
    rng = np.random.default_rng(0)
    actions = []
    for _ in range(STEPS):
      futures = [engine.submit(i, {"state": rng.uniform(-1, 1, 4).astype(np.float32)}) for i in ids]
      actions.append([int(f.result(timeout=120)) for f in futures])
    return np.asarray(actions), rows
  finally:
    engine.stop()


def test_sessions_rolling_together_split_across_prefill_calls_act_the_same(monkeypatch):
  config = testing.tiny_config(context=CONTEXT)
  model, layout = testing.tiny_model(config), VocabLayout.from_config(config.vocab)
  together, one_call = _episodes(model, layout, monkeypatch, engine_lib.PREFILL_POSITIONS)
  budget = 48  # the roll budget: 0.75 x 64 positions
  split, small_calls = _episodes(model, layout, monkeypatch, 2 * budget)
  assert one_call and max(one_call) == 8  # 6 sessions in one bucket of 8 rows
  assert small_calls and max(small_calls) == 2 and len(small_calls) >= 3 * len(one_call)
  np.testing.assert_array_equal(split, together)


def test_prefill_rows_stay_within_the_position_bound():
  for length in (1, 40, 48, 512, 1000, 5000):
    rows = engine_lib._prefill_rows(length)  # pylint: disable=protected-access
    assert rows >= 2 and rows & (rows - 1) == 0
    assert rows == 2 or rows * length <= engine_lib.PREFILL_POSITIONS
    assert 2 * rows * length > engine_lib.PREFILL_POSITIONS  # the largest such power of two
