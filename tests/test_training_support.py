"""Shared by the training, partitioning and checkpointing tests: a tiny config (also a config file
for `gato-train --config tests/test_training_support.py`) and helpers for subprocess runs."""

import os
import subprocess
import sys

import jax
import numpy as np

from experiments import tiny_demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  """tiny_demo's structure at test size: synthetic data, a vocabulary of 384 ids, seconds per run."""
  c = tiny_demo.get_config()
  c.num_train_steps = 6
  c.checkpoint_every_steps = 2
  c.log_every_steps = 2
  c.vocab.text_vocab_size = 128
  c.vocab.num_continuous_bins = 64
  c.vocab.num_discrete_values = 64
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.head_dim = 16
  c.model.embed_dim = 32
  c.model.mlp_dim = 64
  c.model.max_obs_positions = 16
  c.model.num_patch_positions = 8
  c.model.resnet_groups = 4
  c.model.patch_channels = 4
  c.model.max_length = 32
  c.model.max_image_tokens = -1  # synthetic rows have images: encode them all (tiny_demo has none)
  c.model.dropout_rate = 0.1
  c.data.mixture = "synthetic"
  c.data.sequence_length = 32
  c.batch_size = 8
  c.optimizer.peak_learning_rate = 3e-3
  c.optimizer.warmup_steps = 2
  c.checkpoint.keep_last = 2
  c.peak_flops_per_device = 1e9  # skip the CPU matmul measurement in tests
  return c


def params_to_numpy(params):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), params)


def read_params(path, config=None):
  """Params exported by a run (or of a checkpoint step directory) as numpy arrays."""
  from gato_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from gato_jax.tokenizers.layout import VocabLayout  # pylint: disable=g-import-not-at-top
  from gato_jax.training import loop, state  # pylint: disable=g-import-not-at-top
  config = config or get_config()
  model_def, _ = state.abstract_model(loop.default_model_fn(config, VocabLayout.from_config(config.vocab)))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                          model_def.abstract_params)
  return params_to_numpy(checkpointing.load_params(path, abstract))


def free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def assert_params_match(a, b, max_update: float, rtol=1e-4, atol=1e-6):
  """Trees of params agree element for element, except for elements whose true gradient is zero
  (e.g. a bias feeding a normalisation): Adam turns their float noise into lr-sized steps of random
  sign, so they may differ by up to the summed learning rate `max_update`, and must be rare."""
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  close = total = 0
  for x, y in zip(a, b):
    assert x.shape == y.shape
    np.testing.assert_allclose(x, y, rtol=0, atol=max_update + atol)
    close += int(np.isclose(x, y, rtol=rtol, atol=atol).sum())
    total += x.size
  assert close >= 0.99 * total, f"only {close} of {total} parameters agree"


def run_train(workdir, *flags, env=None, devices=8, timeout=300, check=True, **popen):
  """`python -m gato_jax.train --config <this file>` in a fresh process with `devices` CPU devices."""
  cmd = [sys.executable, "-m", "gato_jax.train", f"--config={os.path.abspath(__file__)}",
         f"--workdir={workdir}", *flags]
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO,
              "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
  if popen:
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, **popen)
  result = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f"gato-train exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-6000:]}")
  return result
