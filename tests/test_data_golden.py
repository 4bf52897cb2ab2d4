"""The input pipeline's batches stay bit-identical to those recorded before a refactor (issue #22).

tests/testlib/golden_batches.npz holds the first two batches of both processes (of 2) and an offline
evaluation batch of the tiny fixture's five-kind mixture, written by the code before the episode check
and the foreign mapping became one NumPy implementation and mixtures stopped going through seqio's
registries. A change that alters any token, position, patch or mask fails here; one that means to
(a new tokenization) rewrites the file with the snippet in `batches`' docstring.
"""

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("seqio")

from gato_jax.data import pipeline
from testlib import data_testing as testing

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testlib", "golden_batches.npz")


def batches(data_dir) -> dict:
  """What the golden file holds; to rewrite it: np.savez_compressed(GOLDEN, **batches(tmp_dir))."""
  refs = testing.build_tiny_data_dir(data_dir, num_episodes=(6, 2))
  config = testing.tiny_config(data_dir, sequence_length=48, batch_size=4)
  config.seed = 0
  out = {}
  for p in range(2):
    ds = pipeline.make_dataset(config, "train", p, 2, datasets=refs)
    for i, b in enumerate(ds.take(2).as_numpy_iterator()):
      out.update({f"p{p}_b{i}_{k}": v for k, v in b.items()})
  ds = pipeline.make_eval_dataset(config, "tiny_grid", batch_size=3, datasets=refs)
  out.update({f"eval_{k}": v for k, v in next(ds.as_numpy_iterator()).items()})
  return out


@pytest.mark.slow  # builds the five-kind fixture: ~30 s
def test_batches_are_those_recorded(tmp_path):
  golden = np.load(GOLDEN)
  got = batches(tmp_path)
  assert sorted(got) == sorted(golden.files)
  for key in golden.files:
    assert got[key].dtype == golden[key].dtype and got[key].shape == golden[key].shape, key
    np.testing.assert_array_equal(got[key], golden[key], err_msg=key)
