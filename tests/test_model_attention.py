"""attention_impl="blocked" (causal blocks skipping the masked half) equals the dense XLA kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gato_jax.model import Gato, attention, loss_and_metrics
from testlib.model_testing import model_inputs, tiny_batch, tiny_config
from gato_jax.tokenizers.layout import VocabLayout


@pytest.mark.parametrize("length,block", [(40, 16), (48, 16), (16, 16), (33, 64)])
def test_blocked_attention_equals_dense_values_and_gradients(length, block):
  q, k, v = (jax.random.normal(jax.random.key(i), (2, length, 3, 8)) for i in range(3))
  def loss(attend):
    return lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v)))
  dense = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
  blocked = lambda q, k, v: attention.blocked_causal_attention(q, k, v, block)
  np.testing.assert_allclose(blocked(q, k, v), dense(q, k, v), rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.grad(loss(blocked), (0, 1, 2))(q, k, v), jax.grad(loss(dense), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _loss_and_grads(config, params, batch):
  layout = VocabLayout.from_config(config.vocab)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Gato(config.model, layout, nnx.Rngs(0))))
  def loss_fn(p):
    return loss_and_metrics(nnx.merge(graphdef, p)(model_inputs(batch)), batch)[0]
  return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.mark.parametrize("impl", ["blocked", "auto"])  # auto picks blocked on CPU past one block
def test_gato_with_blocked_attention_matches_the_dense_kernel(monkeypatch, impl):
  monkeypatch.setattr(attention, "ATTENTION_BLOCK", 8)  # 24 positions: 3 blocks
  dense = tiny_config(attention_impl="xla")
  layout = VocabLayout.from_config(dense.vocab)
  params = nnx.split(Gato(dense.model, layout, nnx.Rngs(0)))[1]
  batch = tiny_batch(dense)
  loss, grads = _loss_and_grads(tiny_config(attention_impl=impl), params, batch)
  ref_loss, ref_grads = _loss_and_grads(dense, params, batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, ref_grads)


def test_fused_projections_equal_separate_ones_values_and_gradients():
  """fused_projections concatenates the q/k/v (and gate/up) kernels at run time: same parameters,
  same loss and gradients up to float rounding."""
  config = tiny_config()
  layout = VocabLayout.from_config(config.vocab)
  batch = tiny_batch(config, batch_size=2, length=24)
  results = []
  for fused in (False, True):
    config.model.fused_projections = fused
    graphdef, params = nnx.split(Gato(config.model, layout, nnx.Rngs(params=0)))
    loss = lambda p, g=graphdef: loss_and_metrics(nnx.merge(g, p)(model_inputs(batch)), batch)[0]
    results.append(jax.jit(jax.value_and_grad(loss))(params))
  (loss, grads), (fused_loss, fused_grads) = results
  assert jax.tree.structure(grads) == jax.tree.structure(fused_grads)
  np.testing.assert_allclose(fused_loss, loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
