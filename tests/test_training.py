"""Optimizer and schedule, the sharded train step (1 vs 8 devices, gradient accumulation), the loop's
non-finite handling, config errors, FLOPs / MFU and logging."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gato_jax import features, partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import flops, logger, loop, optimizer, state as state_lib, step as step_lib
from gato_jax.training.synthetic import SyntheticIterator
import test_training_support as support


def test_schedule_warms_up_from_init_then_cosine_decays_by_the_factor():
  c = ml_collections.ConfigDict({"init_learning_rate": 1e-7, "peak_learning_rate": 1e-4,
                                 "warmup_steps": 100, "decay_factor": 10.0})
  schedule = optimizer.learning_rate_schedule(c, 1000)
  np.testing.assert_allclose(schedule(0), 1e-7, rtol=1e-5)
  np.testing.assert_allclose(schedule(50), (1e-7 + 1e-4) / 2, rtol=1e-4)
  np.testing.assert_allclose(schedule(100), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(schedule(550), (1e-4 + 1e-5) / 2, rtol=1e-4)  # cosine midpoint
  np.testing.assert_allclose(schedule(1000), 1e-5, rtol=1e-5)
  assert all(schedule(s) >= schedule(s + 1) for s in range(100, 1000, 37))


def test_weight_decay_skips_norms_and_biases_also_when_layers_are_stacked():
  config = support.get_config()
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  mask = optimizer.weight_decay_mask(model_def.param_axes, model_def.abstract_params)
  flat = {jax.tree_util.keystr(p): (m, x.shape)
          for (p, m), x in zip(jax.tree_util.tree_flatten_with_path(mask)[0],
                               jax.tree.leaves(model_def.abstract_params))}
  decayed = {k for k, (m, _) in flat.items() if m}
  assert any("token_table" in k for k in decayed)
  for name, (m, shape) in flat.items():
    if name.endswith(("['scale']", "['bias']")):
      assert not m, f"{name} {shape} must not be decayed"
    if name.endswith("['kernel']"):
      assert m, f"{name} {shape} must be decayed"
  stacked_norms = [k for k, (m, s) in flat.items() if k.endswith("['scale']") and len(s) == 2]
  assert stacked_norms, "expected [layers, embed] norm scales in the stacked sequence model"


def _train(config, workdir, devices, **kwargs):
  return loop.train(config, str(workdir), devices=devices, **kwargs)


@pytest.mark.slow
def test_one_device_and_eight_devices_data2_fsdp2_tensor2_train_alike(tmp_path):
  config = support.get_config()
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.checkpoint_every_steps = 100
  results = {}
  for shape in ((1, 1, 1), (2, 2, 2)):
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = shape
    workdir = tmp_path / "x".join(map(str, shape))
    result = _train(config, workdir, jax.devices()[:int(np.prod(shape))])
    results[shape] = result
    assert result.step == 3
  one, eight = results[(1, 1, 1)], results[(2, 2, 2)]
  np.testing.assert_allclose(one.last_metrics["loss"], eight.last_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(one.last_metrics["grad_norm"], eight.last_metrics["grad_norm"], rtol=1e-4)
  support.assert_params_match(support.params_to_numpy(one.state.params),
                              support.params_to_numpy(eight.state.params), max_update=5e-3)
  assert any("tensor" in str(x.sharding.spec) for x in jax.tree.leaves(eight.state.params))
  # What the run leaves behind: resolved config, TensorBoard events, checkpoints, exported params.
  workdir = tmp_path / "2x2x2"
  assert os.path.exists(workdir / "config.json")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
  assert os.listdir(workdir / "checkpoints") == ["3"] and os.path.isdir(workdir / "params")


def _deterministic_loss(model, batch, rng):
  del rng  # evaluation mode: no dropout, patch positions at their interval's mean
  from gato_jax.model import loss_and_metrics  # pylint: disable=g-import-not-at-top
  return loss_and_metrics(model(batch), batch)


class _TinyModel(nnx.Module):
  """A small stand-in with Gato's call convention: fast to compile, for tests of the loop itself."""

  def __init__(self, vocab_size, rngs):
    self.embed = nnx.Embed(vocab_size, 16, rngs=rngs)
    self.dense = nnx.Linear(16, 16, rngs=rngs, kernel_metadata={"out_sharding": ("embed", "mlp")})

  def __call__(self, batch, train=False, rng=None):
    return self.embed.attend(jnp.tanh(self.dense(self.embed(batch["tokens"]))))


def test_gradient_accumulation_matches_one_big_batch():
  config = support.get_config()
  layout = VocabLayout.from_config(config.vocab)
  model_fn = lambda rngs: _TinyModel(layout.vocab_size, rngs)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  schedule = optimizer.learning_rate_schedule(config.optimizer, config.num_train_steps)
  mesh = partitioning.make_mesh(config.mesh)
  batch = features.random_batch(np.random.default_rng(1), config.batch_size, config.data.sequence_length,
                                layout, num_patch_positions=config.model.num_patch_positions,
                                max_obs_positions=config.model.max_obs_positions)
  batch["loss_mask"][1::2, ::3] = 0  # unequal target counts per micro-batch
  batch = partitioning.global_batch(batch, mesh, config.batch_size)
  outputs = {}
  for k in (1, 2, 4):
    state = state_lib.create_train_state(model_fn, tx, mesh, model_def, seed=0, rules=partitioning.LOGICAL_AXIS_RULES)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    fn = step_lib.make_train_step(model_def, tx, schedule, grad_accum_steps=k, loss_fn=_deterministic_loss)
    with partitioning.axis_rules(mesh, partitioning.LOGICAL_AXIS_RULES):
      state, metrics = step_lib.jit_train_step(fn, shardings, {n: v.sharding for n, v in batch.items()},
                                               mesh)(state, batch)
    outputs[k] = (jax.device_get(metrics), support.params_to_numpy(state.params))
  m1, p1 = outputs[1]
  for k in (2, 4):
    mk, pk = outputs[k]
    for name in ("loss", "action_accuracy", "text_accuracy", "grad_norm", "num_targets", "tokens_image"):
      np.testing.assert_allclose(m1[name], mk[name], rtol=1e-5, err_msg=f"{name} with {k} micro-batches")
    support.assert_params_match(p1, pk, max_update=2e-7)  # one step at lr = init_learning_rate


def _poisoned_loss(model, batch, rng):
  """NaN whenever every row of the batch comes from task 2 (the iterator below arranges that)."""
  loss, metrics = _deterministic_loss(model, batch, rng)
  poisoned = jnp.all(batch["task_index"] == 2)
  return jnp.where(poisoned, jnp.nan, loss), metrics


class _PoisonAt:
  """Synthetic batches, with every row labelled task 2 at one step."""

  def __init__(self, iterator, step):
    self._iterator, self._step = iterator, step
    self.task_names = iterator.task_names

  def get_next(self):
    batch = self._iterator.get_next()
    if self._iterator.step == self._step:
      batch["task_index"][:] = 2
    return batch

  def save(self, filename):
    self._iterator.save(filename)

  def restore(self, filename):
    self._iterator.restore(filename)


def _nonfinite_run(tmp_path, mode):
  config = support.get_config()
  config.on_nonfinite = mode
  config.checkpoint_every_steps = 100
  layout = VocabLayout.from_config(config.vocab)
  iterator = _PoisonAt(SyntheticIterator(layout, config.batch_size, config.data.sequence_length), step=3)
  seen = []
  result = loop.train(config, str(tmp_path / mode), model_fn=lambda rngs: _TinyModel(layout.vocab_size, rngs),
                      loss_fn=_poisoned_loss, data_iterator=iterator, on_step=seen.append)
  return result, seen


def test_nonfinite_loss_stops_naming_the_step_and_tasks(tmp_path):
  with pytest.raises(loop.NonFiniteError, match=r"step 3; tasks in the batch: synthetic_c \(8 rows\)") as e:
    _nonfinite_run(tmp_path, "stop")
  assert e.value.step == 3 and e.value.tasks == {"synthetic_c": 8}


def test_nonfinite_loss_skips_the_update_when_asked(tmp_path, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  with caplog.at_level(logging.WARNING):
    result, _ = _nonfinite_run(tmp_path, "skip")
  assert result.step == 6 and "Skipped the update of step 3" in caplog.text
  params = jax.tree.leaves(support.params_to_numpy(result.state.params))
  assert all(np.isfinite(p).all() for p in params)
  assert result.last_metrics["skipped_steps"] == 0  # steps 5-6; step 3 was in the previous interval


def test_config_errors_name_the_key(tmp_path):
  config = support.get_config()
  config.on_nonfinite = "ignore"
  with pytest.raises(loop.ConfigError, match="on_nonfinite='ignore' must be one of"):
    loop.train(config, str(tmp_path))
  config = support.get_config()
  config.batch_size = 6
  with pytest.raises(partitioning.MeshConfigError, match="batch_size=6 must be a multiple of 4"):
    loop.train(config, str(tmp_path))
  config = support.get_config()
  config.mesh.tensor = 3
  with pytest.raises(partitioning.MeshConfigError, match="shapes that fit"):
    loop.train(config, str(tmp_path))
  config = support.get_config()
  config.log_every_steps = 0
  with pytest.raises(loop.ConfigError, match="log_every_steps=0 must be positive"):
    loop.train(config, str(tmp_path))


def test_flops_count_matmuls_not_lookups():
  config = support.get_config()
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  total, non_embedding = flops.param_counts(model_def)
  table = layout.vocab_size * config.model.embed_dim
  assert total - non_embedding >= table  # the token table (and position tables) are lookups
  m = config.model
  per_token = 6 * non_embedding + 12 * m.num_layers * m.num_heads * m.head_dim * 32 + 6 * m.embed_dim * layout.vocab_size
  assert flops.train_flops_per_step(model_def, m, layout.vocab_size, 8, 32) == 8 * 32 * per_token


def test_peak_flops_override_table_and_cpu_measurement():
  assert flops.peak_flops_per_device("float32", override=5e12) == 5e12
  assert dict(flops.PEAK_FLOPS_PER_DEVICE)["tpu v5p"] == 459e12
  measured = flops.measure_host_flops("float32", size=256, repeats=2)
  assert 1e8 < measured < 1e14
  # CPU: the host's measured peak, shared by its (fake) devices.
  assert flops.peak_flops_per_device("float32") == pytest.approx(
      flops.measure_host_flops("float32") / jax.local_device_count())


def test_logger_summarizes_interval_and_formats_progress(tmp_path):
  metrics_logger = logger.MetricsLogger(str(tmp_path), num_train_steps=100, tokens_per_step=1000,
                                        flops_per_step=1e9, peak_flops=1e10)
  metrics_logger.start_timer(10)
  steps = [{"loss": np.float32(2.0), "learning_rate": np.float32(1e-3), "grad_norm": np.float32(1.0),
            "text_accuracy": np.float32(0.5), "action_accuracy": np.float32(0.25), "finite": np.float32(1),
            "num_targets": np.float32(10)},
           {"loss": np.float32(4.0), "learning_rate": np.float32(2e-3), "grad_norm": np.float32(3.0),
            "text_accuracy": np.float32(0.5), "action_accuracy": np.float32(0.75), "finite": np.float32(0),
            "num_targets": np.float32(30)}]
  scalars = metrics_logger.log(12, steps)
  metrics_logger.close()
  assert scalars["loss"] == 3.0 and scalars["num_targets"] == 40 and scalars["skipped_steps"] == 1
  assert scalars["tokens_per_s"] == pytest.approx(1000 * scalars["steps_per_s"])
  assert scalars["mfu"] == pytest.approx(scalars["steps_per_s"] * 1e9 / 1e10)
  assert scalars["eta_s"] == pytest.approx(88 / scalars["steps_per_s"])
  line = metrics_logger.progress_line(12, scalars)
  for part in ("step 12/100", "loss 3.0000", "text_acc 0.500", "action_acc 0.500", "lr 1.50e-03",
               "steps/s", "tok/s", "MFU", "ETA", "skipped 1 non-finite"):
    assert part in line, (part, line)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))


def test_synthetic_batches_are_process_slices_of_one_global_batch(tmp_path):
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  kwargs = dict(seed=5, num_patch_positions=8, max_obs_positions=16)
  whole = SyntheticIterator(layout, 12, 24, **kwargs)
  parts = [SyntheticIterator(layout, 12, 24, process_index=i, process_count=3, **kwargs) for i in range(3)]
  for _ in range(2):
    full = whole.get_next()
    assert features.check_batch(full, 24) == 12
    pieces = [p.get_next() for p in parts]
    for name in full:
      np.testing.assert_array_equal(np.concatenate([p[name] for p in pieces]), full[name])
  parts[1].save(tmp_path / "it.json")
  again = SyntheticIterator(layout, 12, 24, process_index=1, process_count=3, **kwargs)
  again.restore(tmp_path / "it.json")
  np.testing.assert_array_equal(again.get_next()["tokens"], parts[1].get_next()["tokens"])
  with pytest.raises(ValueError, match="does not match"):
    SyntheticIterator(layout, 12, 24, process_index=0, process_count=3, **kwargs).restore(tmp_path / "it.json")


def test_synthetic_batches_respect_max_image_tokens():
  layout = VocabLayout(text_vocab_size=128, num_continuous_bins=64, num_discrete_values=64)
  for k in (0, 3):
    batch = SyntheticIterator(layout, 8, 48, max_image_tokens=k, num_patch_positions=8,
                              max_obs_positions=16).get_next()
    features.check_batch(batch, 48)
    assert ((batch["kinds"] == 2).sum(axis=1) <= k).all()  # TokenKind.IMAGE
    np.testing.assert_array_equal(batch["target_kinds"][:, :-1], batch["kinds"][:, 1:])
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["tokens"][:, 1:])
    assert not batch["patches"][batch["kinds"] != 2].any()


def test_one_reducer_sums_counts_and_weights_means():
  parts = {"loss": np.array([1.0, 3.0]), "action_accuracy": np.array([0.5, 1.0]),
           "num_targets": np.array([1.0, 3.0]), "num_action_targets": np.array([0.0, 2.0])}
  weighted = step_lib.reduce_metrics(parts, {"loss": parts["num_targets"],
                                             "action_accuracy": parts["num_action_targets"]}, xp=np)
  assert weighted == {"loss": 2.5, "action_accuracy": 1.0, "num_targets": 4.0, "num_action_targets": 2.0}
  assert step_lib.reduce_metrics(parts, xp=np)["loss"] == 2.0  # equal weights: the steps of an interval
  assert logger.summarize([{"loss": 1.0, "num_targets": 1.0, "finite": 1.0},
                           {"loss": 3.0, "num_targets": 3.0, "finite": 0.0}]) == {
                               "loss": 2.0, "num_targets": 4.0, "skipped_steps": 1.0}
