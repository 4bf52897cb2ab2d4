"""Each accelerator attention kernel (Pallas in interpret mode on CPU) equals the XLA path: outputs and grads."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from gato_jax import partitioning
from gato_jax.model import Gato, attention, loss_and_metrics
from testlib.model_testing import model_inputs, tiny_batch, tiny_config
from gato_jax.tokenizers.layout import VocabLayout

TPU = ("pallas_tpu", "flash_tpu")
PALLAS = [*TPU, "pallas_gpu"]


@pytest.fixture
def interpret(monkeypatch):
  """Pallas' interpreter on CPU: a flag for the GPU kernel; for TPU's, `interpreted` below."""
  monkeypatch.setattr(attention, "INTERPRET", True)


def interpreted(impl):
  """TPU kernels interpret under a context that must cover lowering (so the whole jit call)."""
  return pltpu.force_tpu_interpret_mode() if impl in TPU else contextlib.nullcontext()


def qkv(batch=1, length=256, heads=2, head_dim=32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim)) for key in keys[:3])
  return q, k, v, jax.random.normal(keys[3], (batch, length, heads, head_dim))


@pytest.mark.parametrize("impl", PALLAS + ["blocked"])
def test_kernel_equals_xla_values_and_gradients(interpret, impl):
  q, k, v, cotangent = qkv()
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent)
  ours = lambda q, k, v: attention.causal_attention(q, k, v, impl)
  xla = lambda q, k, v: attention.causal_attention(q, k, v, "xla")
  with interpreted(impl):
    np.testing.assert_allclose(jax.jit(ours)(q, k, v), xla(q, k, v), rtol=1e-5, atol=2e-6)
    ours_grads = jax.jit(jax.grad(loss(ours), (0, 1, 2)))(q, k, v)
  for name, a, b in zip("qkv", ours_grads, jax.grad(loss(xla), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=f"d{name} of {impl}")


def test_kernel_under_a_mesh_runs_per_device_with_the_rules_specs(interpret):
  """Under a (data, fsdp, tensor) mesh the Pallas kernel runs in shard_map over batch and heads.
  (The GPU kernel's interpreter: the TPU interpreter's cross-device simulation hangs on fake CPU
  devices; the shard_map wrapping is the same for every Pallas kernel.)"""
  q, k, v, _ = qkv(batch=4)
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
  with partitioning.axis_rules(mesh, partitioning.LOGICAL_AXIS_RULES):
    out = jax.jit(lambda q, k, v: attention.causal_attention(q, k, v, "pallas_gpu"))(q, k, v)
  np.testing.assert_allclose(out, attention.causal_attention(q, k, v, "xla"), rtol=1e-5, atol=2e-6)


def test_sequence_sharding_is_refused_for_pallas_kernels(interpret):
  q, k, v, _ = qkv(batch=2)
  mesh = partitioning.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2])
  rules = partitioning.resolve_rules(extra=(("activation_batch", "data"), ("activation_length", "fsdp")))
  with pytest.raises(ValueError, match="sequence axis sharded"):
    with partitioning.axis_rules(mesh, rules):
      jax.jit(lambda q, k, v: attention.causal_attention(q, k, v, "pallas_gpu"))(q, k, v)


def test_pallas_kernels_need_a_tile_multiple(interpret):
  q, k, v, _ = qkv(length=200)
  with pytest.raises(ValueError, match="multiple of 128"):
    attention.causal_attention(q, k, v, "flash_tpu")


@pytest.mark.slow  # Pallas' interpreter through a whole model's backward pass: minutes on 2 cores
@pytest.mark.parametrize("impl", ["pallas_tpu", "pallas_gpu"])
def test_gato_loss_and_gradients_with_a_pallas_kernel_equal_xla(interpret, impl):
  config = tiny_config()
  layout = VocabLayout.from_config(config.vocab)
  batch = tiny_batch(config, batch_size=2, length=128)

  def loss_and_grads(attention_impl):
    config.model.attention_impl = attention_impl
    graphdef, params = nnx.split(Gato(config.model, layout, nnx.Rngs(params=0)))
    loss = lambda p: loss_and_metrics(nnx.merge(graphdef, p)(model_inputs(batch)), batch)[0]
    return jax.jit(jax.value_and_grad(loss))(params)

  with interpreted(impl):
    ours, ours_grads = loss_and_grads(impl)
  xla, xla_grads = loss_and_grads("xla")
  np.testing.assert_allclose(ours, xla, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(xla_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_cudnn_is_passed_to_jax_dot_product_attention(monkeypatch):
  """No GPU here: the cuDNN path is jax.nn.dot_product_attention(implementation="cudnn") itself."""
  seen = {}

  def fake(q, k, v, **kwargs):
    seen.update(kwargs)
    return q
  monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
  q, k, v, _ = qkv()
  attention.causal_attention(q, k, v, "cudnn")
  assert seen == {"is_causal": True, "implementation": "cudnn"}
