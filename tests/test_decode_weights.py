"""Acting's decode shortcuts: a narrower copy of the layer matrices for many-position calls (bfloat16
products with float32 accumulation), the patch ResNet skipped where no image can be, and how
config.eval.chunk_dtype resolves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gato_jax.acting import decode
from gato_jax.model import Gato, options
from gato_jax.tokenizers.layout import TokenKind, VocabLayout
from testlib.model_testing import model_inputs, tiny_batch, tiny_config


@pytest.fixture(scope="module")
def tiny():
  config = tiny_config()
  layout = VocabLayout.from_config(config.vocab)
  model = Gato(config.model, layout, nnx.Rngs(0))
  return config, model


def chunk_call(graphdef, which: str, images: bool = True):
  def call(params, features, cache):
    model, weights = decode.merge(graphdef, params)
    return model.decode(features, cache, layers=getattr(weights, which), images=images)[0]
  return jax.jit(call)


def test_a_bfloat16_chunk_copy_multiplies_narrow_and_stays_close_to_float32(tiny):
  config, model = tiny
  graphdef, params = decode.split(model, "bfloat16")
  weights = params[1]
  for tokens, chunks in zip(jax.tree.leaves(weights.tokens), jax.tree.leaves(weights.chunks)):
    assert tokens.dtype == jnp.float32
    assert chunks.dtype == (jnp.bfloat16 if tokens.ndim >= 2 else jnp.float32)  # norms stay float32
  features = model_inputs(tiny_batch(config), 0, 12)
  cache = model.init_cache(4, 32)
  exact = np.asarray(chunk_call(graphdef, "tokens")(params, features, cache))
  narrow = np.asarray(chunk_call(graphdef, "chunks")(params, features, cache))
  assert narrow.dtype == np.float32 and np.isfinite(narrow).all()
  difference = np.abs(narrow - exact).max()
  assert 0 < difference < 0.05 * np.abs(exact).max()  # rounded inputs, float32 sums: close, not equal
  jaxpr = str(jax.make_jaxpr(chunk_call(graphdef, "chunks"))(params, features, cache))
  assert "preferred_element_type=float32" in jaxpr and "bf16[" in jaxpr


def test_without_a_chunk_dtype_both_calls_read_the_same_arrays(tiny):
  _, model = tiny
  _, (_, weights) = decode.split(model)
  assert all(a is b for a, b in zip(jax.tree.leaves(weights.tokens), jax.tree.leaves(weights.chunks)))
  assert decode.narrowed(weights.tokens, "float32") is not None  # not narrower: nothing is cast
  assert all(a is b for a, b in zip(jax.tree.leaves(weights.tokens),
                                    jax.tree.leaves(decode.narrowed(weights.tokens, "float32"))))


def test_images_false_skips_the_patch_resnet_and_leaves_image_positions_nan(tiny):
  config, model = tiny
  graphdef, params = decode.split(model)
  batch = model_inputs(tiny_batch(config), 0, 16)
  kinds = np.asarray(batch["kinds"])
  cache = model.init_cache(4, 32)
  with_images = np.asarray(chunk_call(graphdef, "tokens", True)(params, batch, cache))
  without = np.asarray(chunk_call(graphdef, "tokens", False)(params, batch, cache))
  has_image = (kinds == TokenKind.IMAGE).any(axis=1)
  assert has_image.any() and (~has_image).any()
  # Rows without an image token: the same logits; rows with one: NaN from it on (loud, never zero).
  np.testing.assert_allclose(without[~has_image], with_images[~has_image], rtol=1e-5, atol=1e-5)
  first = (kinds == TokenKind.IMAGE).argmax(axis=1)
  for row in np.flatnonzero(has_image):
    assert np.isnan(without[row, first[row]:]).all() and np.isfinite(with_images[row]).all()
  jaxpr = str(jax.make_jaxpr(chunk_call(graphdef, "tokens", False))(params, batch, cache))
  assert "conv_general_dilated" not in jaxpr
  assert "conv_general_dilated" in str(jax.make_jaxpr(chunk_call(graphdef, "tokens", True))(params, batch, cache))


@pytest.mark.parametrize("requested, backend, expected", [
    ("none", "cpu", None),
    ("bfloat16", "cpu", "bfloat16"),
    ("auto", "tpu", None),  # the model's own dtype there already
    ("auto", "cpu", "bfloat16" if options.host_has_amx() else None),
])
def test_chunk_dtype_resolves_from_the_eval_config(requested, backend, expected):
  config = tiny_config()
  config.eval.chunk_dtype = requested
  assert options.chunk_dtype(config, backend) == expected


def test_a_bad_chunk_dtype_names_the_key():
  config = tiny_config()
  config.eval.chunk_dtype = "int8"
  with pytest.raises(ValueError, match=r"config.eval.chunk_dtype='int8': expected auto, none or one of"):
    options.chunk_dtype(config, "cpu")
  config.eval.chunk_dtype = "auto"
  config.eval.dtype = "bfloat16"  # a bfloat16 model has nothing narrower to use
  assert options.chunk_dtype(config, "cpu") is None


def test_action_tokens_of_a_batch_read_the_narrow_copy_and_batch_one_the_float32_weights(tiny):
  config, model = tiny
  graphdef, params = decode.split(model, "bfloat16")
  weights = params[1]
  assert weights.for_rows(1) is weights.tokens and weights.for_rows(2) is weights.chunks
  ranges = jnp.asarray([[10, 20]], jnp.int32)

  def step(batch):
    cache = model.init_cache(batch, 32)
    chunk = {k: jnp.asarray(v[:batch]) for k, v in model_inputs(tiny_batch(config), 0, 5).items()}
    act = lambda params, cache, chunk: decode.act_cached(graphdef, params, cache, chunk, ranges, jax.random.key(0),
                                                         jnp.float32(1.0), greedy=True)
    return str(jax.make_jaxpr(act)(params, cache, chunk))

  # The 5-position chunk multiplies in bfloat16 at any batch; the action tokens ([B, 1, E] activations)
  # in float32 at batch 1 and in bfloat16 at batch 2.
  one, two = step(1), step(2)
  assert "bf16[1,5,32]" in one and "bf16[1,1,32]" not in one
  assert "bf16[2,5,32]" in two and "bf16[2,1,32]" in two
