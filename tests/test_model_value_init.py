"""The "smooth" continuous-bin initialisation: only continuous rows change, neighbours start close,
the table's scale is kept, and a bad name fails clearly."""

import jax
import numpy as np
import pytest
from flax import nnx

from gato_jax.model import Gato
from testlib.model_testing import tiny_config
from gato_jax.model.value_init import apply_continuous_init, smooth_rows
from gato_jax.tokenizers.layout import VocabLayout


def _table(init):
  config = tiny_config()
  config.model.continuous_init = init
  layout = VocabLayout.from_config(config.vocab)
  model = Gato(config.model, layout, nnx.Rngs(0))
  return np.asarray(model.embedding.token_table.embedding[...]), layout


def test_smooth_init_changes_only_the_continuous_rows_and_orders_them():
  normal, layout = _table("normal")
  smooth, _ = _table("smooth")
  start, stop = layout.continuous_range()
  np.testing.assert_array_equal(normal[:start], smooth[:start])  # text rows untouched
  np.testing.assert_array_equal(normal[stop:], smooth[stop:])  # discrete, separator, padding untouched
  rows = smooth[start:stop]
  unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
  near = (unit[:-1] * unit[1:]).sum(1).mean()
  far = (unit[: -(stop - start) // 2] * unit[(stop - start) // 2:]).sum(1).mean()
  assert near > 0.4 and abs(far) < 0.2, (near, far)
  random_rows = normal[start:stop] / np.linalg.norm(normal[start:stop], axis=1, keepdims=True)
  assert abs((random_rows[:-1] * random_rows[1:]).sum(1).mean()) < 0.2
  width = rows.shape[1]
  assert rows.std() * np.sqrt(width) == pytest.approx(1.0, abs=0.1)


def test_smooth_rows_are_deterministic_per_key_and_unknown_inits_fail():
  key = jax.random.key(3)
  np.testing.assert_array_equal(smooth_rows(key, 64, 16), smooth_rows(key, 64, 16))
  with pytest.raises(ValueError, match="continuous_init='bins'"):
    apply_continuous_init(np.zeros((8, 4), np.float32), key, 2, 6, "bins")
  config = tiny_config()
  config.model.continuous_init = "bins"
  with pytest.raises(ValueError, match="config.model.continuous_init"):
    Gato(config.model, VocabLayout.from_config(config.vocab), nnx.Rngs(0))
