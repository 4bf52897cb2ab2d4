"""The model against the issue's list: causality, the loss mask, cached decoding, patch positions,
scan / remat equivalence, clear errors, and a tiny model that learns."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gato_jax.model import (LOGICAL_AXIS_NAMES, Gato, ModelOptions, loss_and_metrics,
                            patch_position_index)
from testlib.model_testing import model_inputs, tiny_batch, tiny_config
from gato_jax.tokenizers.layout import TokenKind, VocabLayout

TARGET_KINDS = np.array([TokenKind.TEXT, TokenKind.ACTION])


class Tiny:
  """One tiny model, its split state and jitted entry points, shared by the tests of this file."""

  def __init__(self, config):
    self.config = config
    self.layout = VocabLayout.from_config(config.vocab)
    self.model = Gato(config.model, self.layout, nnx.Rngs(0))
    self.graphdef, self.params = nnx.split(self.model)
    graphdef = self.graphdef
    self.forward = jax.jit(lambda params, f: nnx.merge(graphdef, params)(f))
    self.forward_train = jax.jit(
        lambda params, f, rng: nnx.merge(graphdef, params)(f, train=True, rng=rng))
    self.decode = jax.jit(lambda params, f, cache: nnx.merge(graphdef, params).decode(f, cache))
    self.batch = tiny_batch(config)


@pytest.fixture(scope="module")
def tiny():
  return Tiny(tiny_config(dropout_rate=0.1))


def test_changing_a_later_token_never_changes_an_earlier_logit(tiny):
  inputs = model_inputs(tiny.batch)
  t = 11
  rng = np.random.default_rng(1)
  changed = {k: np.array(v) for k, v in inputs.items()}
  changed["tokens"][:, t:] = rng.integers(0, tiny.layout.separator_id, changed["tokens"][:, t:].shape)
  changed["kinds"][:, t:] = rng.permutation(changed["kinds"][:, t:], axis=1)
  changed["patches"][:, t:] = rng.integers(0, 256, changed["patches"][:, t:].shape, dtype=np.uint8)
  changed["obs_positions"][:, t:] = rng.integers(0, 16, changed["obs_positions"][:, t:].shape)
  for run in (lambda f: tiny.forward(tiny.params, f),
              lambda f: tiny.forward_train(tiny.params, f, jax.random.key(3))):
    before, after = np.asarray(run(inputs)), np.asarray(run(changed))
    np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
    assert np.abs(after[:, t:] - before[:, t:]).max() > 1e-2  # the change is visible from t on


def reference_loss(logits, batch):
  """Mean cross-entropy over TEXT and ACTION targets, in NumPy float64."""
  logits = np.asarray(logits, np.float64)
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
  weight = batch["loss_mask"] * np.isin(batch["target_kinds"], TARGET_KINDS)
  return (nll * weight).sum() / weight.sum()


def test_the_loss_ignores_observation_tokens_exactly(tiny):
  batch = tiny.batch
  logits = tiny.forward(tiny.params, model_inputs(batch))
  loss, metrics = loss_and_metrics(logits, batch)
  np.testing.assert_allclose(float(loss), reference_loss(logits, batch), rtol=1e-5)

  observed = ~np.isin(batch["target_kinds"], TARGET_KINDS)
  assert observed.sum() > 0 and (~observed).sum() > 0
  rng = np.random.default_rng(2)
  other = dict(batch)
  other["targets"] = np.where(observed, rng.integers(0, 256, observed.shape), batch["targets"]).astype(np.int32)
  other["loss_mask"] = np.where(observed, 1.0, batch["loss_mask"]).astype(np.float32)  # a wrong mask
  other_logits = jnp.where(observed[..., None], 100 * jax.random.normal(jax.random.key(0), logits.shape),
                           logits)
  assert float(loss_and_metrics(other_logits, other)[0]) == float(loss)

  grad = np.asarray(jax.grad(lambda lg: loss_and_metrics(lg, batch)[0])(logits))
  assert np.all(grad[observed] == 0)
  assert np.all(np.abs(grad[~observed]).sum(-1) > 0)
  assert float(metrics["num_targets"]) == (~observed).sum()


def test_loss_and_accuracy_match_optax_cross_entropy_and_argmax():
  """The shared-max log-sum-exp and the max-based accuracy against the textbook forms."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(30 * rng.standard_normal((3, 17, 50)), jnp.float32)
  targets = rng.integers(0, 50, (3, 17)).astype(np.int32)
  targets[0, :5] = np.argmax(np.asarray(logits)[0, :5], -1)  # some right, most wrong
  kinds = np.where(rng.random((3, 17)) < 0.5, TokenKind.ACTION, TokenKind.TEXT).astype(np.int32)
  batch = {"targets": targets, "target_kinds": kinds, "loss_mask": np.ones((3, 17), np.float32)}
  loss, m = loss_and_metrics(logits, batch)
  reference = lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, targets).mean()
  np.testing.assert_allclose(float(loss), float(reference(logits)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.grad(lambda lg: loss_and_metrics(lg, batch)[0])(logits)),
                             np.asarray(jax.grad(reference)(logits)), rtol=1e-5, atol=1e-8)
  right = np.argmax(np.asarray(logits), -1) == targets
  for kind, name in ((TokenKind.ACTION, "action_accuracy"), (TokenKind.TEXT, "text_accuracy")):
    np.testing.assert_allclose(float(m[name]), right[kinds == kind].mean(), rtol=1e-6)


def test_metrics_per_target_kind():
  kinds = np.array([[TokenKind.TEXT, TokenKind.ACTION, TokenKind.IMAGE, TokenKind.ACTION,
                     TokenKind.SEPARATOR]], np.int32)
  batch = {"targets": np.array([[1, 2, 3, 4, 5]], np.int32), "target_kinds": kinds,
           "loss_mask": np.isin(kinds, TARGET_KINDS).astype(np.float32), "kinds": kinds}
  logits = np.zeros((1, 5, 8), np.float32)
  logits[0, 0, 1] = logits[0, 1, 7] = logits[0, 2, 3] = logits[0, 3, 4] = 5.0  # action at 1 wrong
  _, m = loss_and_metrics(logits, batch)
  assert float(m["text_accuracy"]) == 1.0 and float(m["action_accuracy"]) == 0.5
  assert (float(m["num_text_targets"]), float(m["num_action_targets"])) == (1.0, 2.0)
  assert float(m["tokens_action"]) == 2.0 and float(m["tokens_image"]) == 1.0
  np.testing.assert_allclose(float(m["loss"]), reference_loss(logits, batch), rtol=1e-6)
  np.testing.assert_allclose(float(m["text_loss"]), np.log(7 + np.exp(5)) - 5, rtol=1e-5)


@pytest.mark.parametrize("position_embedding,scan_layers", [("none", True), ("learned", False)])
def test_cached_decoding_equals_the_full_pass_token_by_token(position_embedding, scan_layers):
  tiny = Tiny(tiny_config(position_embedding=position_embedding, scan_layers=scan_layers))
  batch, length, prompt = tiny.batch, tiny.batch["tokens"].shape[1], 7
  kinds = set(np.unique(batch["kinds"]).tolist())
  assert {TokenKind.TEXT, TokenKind.IMAGE, TokenKind.OBS_DISCRETE, TokenKind.OBS_CONTINUOUS,
          TokenKind.SEPARATOR, TokenKind.ACTION} <= kinds  # a mixed sequence
  full = np.asarray(tiny.forward(tiny.params, model_inputs(batch)))
  cache = tiny.model.init_cache(batch["tokens"].shape[0])
  logits, cache = tiny.decode(tiny.params, model_inputs(batch, 0, prompt), cache)
  steps = [logits]
  for t in range(prompt, length):
    logits, cache = tiny.decode(tiny.params, model_inputs(batch, t, t + 1), cache)
    steps.append(logits)
  assert int(cache.index) == length
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)


def test_left_padded_prompts_decode_like_unpadded_ones(tiny):
  """PAD positions are written to the cache but never attended (ragged prompts in one batch)."""
  batch, pad = tiny.batch, 3
  full = np.asarray(tiny.forward(tiny.params, model_inputs(batch)))
  padded = {k: np.concatenate([np.zeros_like(v[:, :pad]), v[:, :7 - pad]], axis=1)
            for k, v in model_inputs(batch).items()}  # kinds 0 = PAD
  logits, cache = tiny.decode(tiny.params, padded, tiny.model.init_cache(4))
  np.testing.assert_allclose(logits[:, pad:], full[:, :7 - pad], rtol=1e-4, atol=1e-5)
  for t in range(7 - pad, 10):
    logits, cache = tiny.decode(tiny.params, model_inputs(batch, t, t + 1), cache)
    np.testing.assert_allclose(logits[:, 0], full[:, t], rtol=1e-4, atol=1e-5)


def test_writing_past_the_cache_gives_nan_logits(tiny):
  step = model_inputs(tiny.batch, 0, 1)
  cache = tiny.model.init_cache(4)
  last = cache.replace(index=jnp.int32(cache.max_length - 1))
  logits, full = tiny.decode(tiny.params, step, last)
  assert np.isfinite(logits).all() and int(full.index) == cache.max_length
  logits, _ = tiny.decode(tiny.params, step, full)
  assert np.isnan(logits).all()


def test_patch_position_index_eval_rule_and_train_sampling():
  intervals = jnp.array([[0, 2], [5, 6], [0, 128], [10, 14], [3, 8], [0, 0]], jnp.int32)
  # Evaluation: round((start + end - 1) / 2), half up; an empty interval gives its start.
  np.testing.assert_array_equal(patch_position_index(intervals), [1, 5, 64, 12, 5, 0])
  many = jnp.broadcast_to(intervals, (4000,) + intervals.shape)
  draws = np.asarray(patch_position_index(many, jax.random.key(0)))
  for i, (start, end) in enumerate(np.asarray(intervals)):
    values, counts = np.unique(draws[:, i], return_counts=True)
    expected = np.arange(start, max(end, start + 1))
    np.testing.assert_array_equal(values, expected)  # every integer of [start, end), nothing else
    assert counts.min() > 0.7 * 4000 / len(expected) or len(expected) > 100
  other = np.asarray(patch_position_index(many, jax.random.key(1)))
  assert (other[:, 2] != draws[:, 2]).mean() > 0.9


def test_image_embedding_follows_the_spec_and_train_differs_from_eval(tiny):
  inputs = model_inputs(tiny.batch)
  image = inputs["kinds"] == TokenKind.IMAGE
  (b, t), action = np.argwhere(image)[0], tuple(np.argwhere(inputs["kinds"] == TokenKind.ACTION)[0])
  graphdef = nnx.graphdef(tiny.model.embedding)

  @jax.jit
  def embeddings(state):
    embedding = nnx.merge(graphdef, state)
    positions = jnp.broadcast_to(jnp.arange(inputs["tokens"].shape[1]), inputs["tokens"].shape)
    rows, cols = inputs["patch_rows"][b, t], inputs["patch_cols"][b, t]
    spec_image = (embedding.patch_encoder(inputs["patches"][b, t])
                  + embedding.patch_row_table.embedding[(rows[0] + rows[1]) // 2]
                  + embedding.patch_col_table.embedding[(cols[0] + cols[1]) // 2]
                  + embedding.obs_position_table.embedding[inputs["obs_positions"][b, t]])
    spec_action = embedding.token_table.embedding[inputs["tokens"][action]] + embedding.action_position
    return (embedding(inputs, positions=positions),
            [embedding(inputs, positions=positions, rng=jax.random.key(k)) for k in (0, 1)],
            spec_image * math.sqrt(32), spec_action * math.sqrt(32))

  x, (a, b2), spec_image, spec_action = jax.tree.map(np.asarray, embeddings(nnx.state(tiny.model.embedding)))
  np.testing.assert_allclose(x[b, t], spec_image, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x[action], spec_action, rtol=1e-5, atol=1e-6)
  assert np.abs(a - b2)[image].max() > 1e-3  # sampled patch positions differ between draws
  np.testing.assert_array_equal(a[~image], x[~image])  # and only image positions move


def loss_and_grads(config, params, batch):
  """Loss and parameter gradients of `config`'s model run on `params` (train mode, fixed key)."""
  layout = VocabLayout.from_config(config.vocab)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Gato(config.model, layout, nnx.Rngs(0))))

  def loss_fn(p, batch):  # the batch is an argument: a closed-over one is constant-folded slowly
    logits = nnx.merge(graphdef, p)(model_inputs(batch), train=True, rng=jax.random.key(7))
    return loss_and_metrics(logits, batch)[0]
  return jax.jit(jax.value_and_grad(loss_fn))(params, batch)


@pytest.fixture(scope="module")
def reference_gradients(tiny):
  """scan_layers=True, remat_policy="none": the configuration the others are compared with."""
  return loss_and_grads(tiny.config, tiny.params, tiny.batch)


# Layers are stored stacked whatever the switches, so every variant runs on the very same parameters.
@pytest.mark.parametrize("scan,remat", [
    (False, "full"),
    (True, "dots_with_no_batch_dims_saveable"),
    pytest.param(False, "none", marks=pytest.mark.slow),
    pytest.param(True, "full", marks=pytest.mark.slow),
    pytest.param(False, "dots_saveable", marks=pytest.mark.slow),
])
def test_scan_and_remat_switches_give_the_same_loss_and_gradients(tiny, reference_gradients, scan,
                                                                  remat):
  config = tiny_config(dropout_rate=0.1, scan_layers=scan, remat_policy=remat)
  loss, grads = loss_and_grads(config, tiny.params, tiny.batch)
  np.testing.assert_allclose(loss, reference_gradients[0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads,
               reference_gradients[1])


def test_unrolled_layers_give_the_same_logits_as_scanned_ones(tiny):
  config = tiny_config(dropout_rate=0.1, scan_layers=False)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Gato(config.model, tiny.layout, nnx.Rngs(0))))
  unrolled = jax.jit(lambda p, f: nnx.merge(graphdef, p)(f))(tiny.params, model_inputs(tiny.batch))
  np.testing.assert_allclose(unrolled, tiny.forward(tiny.params, model_inputs(tiny.batch)),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    (lambda f: f.update(patches=f["patches"][:, :, :8, :8]), r"'patches' has shape .*16x16-pixel patches"),
    (lambda f: f.update(patches=f["patches"].astype(np.float32)), "expected uint8"),
    (lambda f: f.pop("patch_rows"), r"missing features \['patch_rows'\]"),
    (lambda f: f.update(tokens=f["tokens"][0]), r"'tokens' has shape \(24,\)"),
    (lambda f: f.update(kinds=f["kinds"][:, :5]), r"'kinds' has shape \(4, 5\), expected \(4, 24\)"),
    (lambda f: f.update(obs_positions=f["obs_positions"].astype(np.float32)), "integer type"),
])
def test_feature_config_mismatch_fails_clearly(tiny, change, message):
  inputs = model_inputs(tiny.batch)
  change(inputs)
  with pytest.raises(ValueError, match=message):
    tiny.model(inputs)


def test_length_beyond_max_length_and_bad_config_fail_clearly():
  config = tiny_config(position_embedding="learned", max_length=16)
  model = Gato(config.model, VocabLayout.from_config(config.vocab), nnx.Rngs(0))
  with pytest.raises(ValueError, match="length 24 exceeds config.model.max_length=16"):
    model(model_inputs(tiny_batch(config)))
  with pytest.raises(ValueError, match="max_length=32 exceeds"):
    model.init_cache(1, 32)
  with pytest.raises(ValueError, match=r"chunk of 24 positions exceeds the cache's max_length=8"):
    Gato(tiny_config().model, VocabLayout.from_config(config.vocab), nnx.Rngs(0)).prefill(
        model_inputs(tiny_batch(config)), max_length=8)
  with pytest.raises(ValueError, match="needs rng"):
    model(model_inputs(tiny_batch(config, length=8)), train=True)
  bad = [({"patch_channels": 10}, "patch_channels=10; expected a multiple of resnet_groups=4"),
         ({"remat_policy": "some"}, "remat_policy='some'"),
         ({"num_layers": 0}, "num_layers=0; expected a positive int"),
         ({"dtype": "fp8"}, "dtype='fp8'")]
  for override, message in bad:
    with pytest.raises(ValueError, match=message):
      ModelOptions.from_config(tiny_config(**override).model)
  unknown = tiny_config().model
  unknown.mlp_hidden = 3
  with pytest.raises(ValueError, match=r"unknown keys \['mlp_hidden'\]"):
    ModelOptions.from_config(unknown)


def test_every_parameter_has_logical_axis_names():
  config = tiny_config(tie_embeddings=False, position_embedding="learned")
  model = nnx.eval_shape(lambda: Gato(config.model, VocabLayout.from_config(config.vocab),
                                      nnx.Rngs(0)))
  flat = nnx.state(model, nnx.Param).flat_state()
  assert len(flat) > 20
  for path, param in flat:
    names = param.get_metadata().get("out_sharding")
    where = "/".join(map(str, path))
    assert names is not None and len(names) == param.get_value().ndim, where
    assert all(n is None or n in LOGICAL_AXIS_NAMES for n in names), (where, names)
    assert (names[0] == "layers") == ("layers" in path), where
  specs = nnx.get_partition_spec(nnx.state(model))
  assert tuple(specs["embedding"]["token_table"]["embedding"].get_value()) == ("vocab", "embed")
  assert tuple(specs["head"]["kernel"].get_value()) == ("embed", "vocab")
  assert tuple(specs["sequence_model"]["layers"]["attention"]["query"]["kernel"].get_value()) == (
      "layers", "embed", "heads", "kv")


def test_bfloat16_activations_keep_float32_parameters_and_logits():
  config = tiny_config(dtype="bfloat16", tie_embeddings=False)
  tiny = Tiny(config)
  assert {p.dtype for p in jax.tree.leaves(tiny.params)} == {jnp.dtype(jnp.float32)}
  inputs = model_inputs(tiny.batch)
  jaxpr = str(jax.make_jaxpr(lambda p: nnx.merge(tiny.graphdef, p)(inputs))(tiny.params))
  assert "bf16" in jaxpr
  logits = tiny.forward(tiny.params, inputs)
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()


def test_tiny_preset_trains_a_few_steps_on_random_features():
  from experiments import tiny_demo  # pylint: disable=g-import-not-at-top
  config = tiny_demo.get_config()
  config.model.max_image_tokens = -1  # the demo's mixture has no images; these random features do
  layout = VocabLayout.from_config(config.vocab)
  model = Gato(config.model, layout, nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  batch = tiny_batch(config, batch_size=4, length=32, seed=3)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, batch, rng):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(model_inputs(batch), train=True, rng=rng)
      return loss_and_metrics(logits, batch)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for i in range(8):
    params, opt_state, loss = step(params, opt_state, batch, jax.random.key(i))
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.7 * losses[0], losses


def test_gathered_patch_encoder_equals_encoding_every_position(tiny):
  """max_image_tokens=K gathers the first K image positions: with K >= the images of every sequence the
  logits equal the every-position encoder; K too small or 0 makes the sequences with missed images NaN
  (loud: the non-finite check stops training) and leaves the other sequences exact."""
  inputs = model_inputs(tiny.batch)
  per_sequence = (inputs["kinds"] == TokenKind.IMAGE).sum(axis=1)
  reference = np.asarray(tiny.forward(tiny.params, inputs))
  for k, exact in ((int(per_sequence.max()), True), (1, False), (0, False)):
    config = tiny_config(dropout_rate=0.1, max_image_tokens=k)
    graphdef = nnx.graphdef(Gato(config.model, tiny.layout, nnx.Rngs(0)))
    logits = np.asarray(jax.jit(lambda p, f: nnx.merge(graphdef, p)(f))(tiny.params, inputs))
    if exact:
      np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
    else:
      missed = per_sequence > k
      assert missed.any() and (~missed).any()
      assert np.isnan(logits[missed]).any(axis=(1, 2)).all()
      np.testing.assert_allclose(logits[~missed], reference[~missed], rtol=1e-5, atol=1e-5)
  no_images = {**inputs, "kinds": np.where(inputs["kinds"] == TokenKind.IMAGE, TokenKind.OBS_DISCRETE,
                                           inputs["kinds"]).astype(np.int32)}
  config = tiny_config(dropout_rate=0.1, max_image_tokens=0)
  graphdef = nnx.graphdef(Gato(config.model, tiny.layout, nnx.Rngs(0)))
  np.testing.assert_allclose(np.asarray(jax.jit(lambda p, f: nnx.merge(graphdef, p)(f))(tiny.params, no_images)),
                             np.asarray(tiny.forward(tiny.params, no_images)), rtol=1e-5, atol=1e-5)
