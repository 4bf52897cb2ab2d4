"""The paper presets instantiate abstractly at full size; their counts against the paper's; the
gato-model-summary entry point."""

import importlib
import subprocess
import sys

import jax
import pytest

from gato_jax import model_summary
from gato_jax.tokenizers.layout import VocabLayout

PAPER = {"gato_79m": 79e6, "gato_364m": 364e6, "gato_1_2b": 1.18e9}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_paper_presets_instantiate_abstractly_and_count_close_to_the_paper(preset):
  config = importlib.import_module(f"experiments.{preset}").get_config()
  params = model_summary.abstract_params(config)
  assert all(isinstance(v, jax.ShapeDtypeStruct) for v in params.values())  # nothing allocated
  m = config.model
  layers = {p: v for p, v in params.items() if p[:2] == ("sequence_model", "layers")}
  attention = 4 * m.embed_dim * m.num_heads * m.head_dim
  expected_layers = m.num_layers * (attention + 3 * m.embed_dim * m.mlp_dim + 4 * m.embed_dim)
  assert model_summary.count(list(layers.values())) == expected_layers
  table = params[("embedding", "token_table", "embedding")].shape
  assert table == (VocabLayout.from_config(config.vocab).vocab_size, m.embed_dim)

  totals = model_summary.conventions(params)
  gap = totals["all parameters"] / PAPER[preset] - 1
  assert abs(gap) < 0.10, (preset, totals)  # +8.1%, +9.0%, +9.4% today (gato_jax/model_summary.py)


def test_gato_model_summary_prints_a_table_and_total_params_last():
  result = subprocess.run(
      [sys.executable, "-m", "gato_jax.model_summary", "--config", "experiments/tiny_demo.py"],
      capture_output=True, text=True, check=True, env={"JAX_PLATFORMS": "cpu", "PATH": "",
                                                     "PYTHONPATH": "."})
  lines = result.stdout.strip().splitlines()
  from experiments import tiny_demo  # pylint: disable=g-import-not-at-top
  expected = model_summary.count(list(model_summary.abstract_params(tiny_demo.get_config()).values()))
  assert lines[-1] == f"total_params={expected}"
  assert any(line.startswith("embedding/patch_encoder") for line in lines)
  assert any(line.startswith("sequence_model/layers/mlp") for line in lines)
