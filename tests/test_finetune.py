"""Fine-tuning: init_from (another run's parameters onto another mesh, fresh optimizer, resume wins,
mismatch errors) and freezing (frozen parameters unchanged, no optimizer state for them)."""

import logging
import shutil

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gato_jax import features, partitioning
from gato_jax.tokenizers.layout import VocabLayout
from gato_jax.training import init_from, loop, optimizer, state as state_lib, step as step_lib
import test_training_support as support


def _config(mesh=(2, 2, 2), **overrides):
  c = support.get_config()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  for key, value in overrides.items():
    node, name = c, key
    while "." in name:
      head, name = name.split(".", 1)
      node = node[head]
    node[name] = value
  return c


@pytest.fixture(name="source", scope="module")
def fixture_source(tmp_path_factory):
  """A run trained 2 steps on data=2 x fsdp=2 x tensor=2: checkpoints 1 and 2, config, params/."""
  workdir = tmp_path_factory.mktemp("source")
  config = _config(num_train_steps=2, checkpoint_every_steps=1)
  assert loop.train(config, str(workdir)).step == 2
  return workdir


_FRESH_STATES = {}


def _fresh_state(config, seed=1):
  """A new run's initial state and mesh; one per (config without init_from, seed): init_from.apply never
  changes its input, and each initialisation is a compile on 8 devices."""
  plain = config.copy_and_resolve_references()
  plain.init_from = ""
  key = (str(plain), seed)
  if key not in _FRESH_STATES:
    _FRESH_STATES[key] = _initial_state(config, seed)
  return _FRESH_STATES[key]


def _initial_state(config, seed):
  layout = VocabLayout.from_config(config.vocab)
  model_fn = loop.default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  mesh = partitioning.make_mesh(config.mesh)
  return state_lib.create_train_state(model_fn, tx, mesh, model_def, seed,
                                      rules=partitioning.rules_from_config(config.mesh)), mesh


@pytest.mark.parametrize("spec,expected", [
    ("{w}", "checkpoints/2"), ("{w}@1", "checkpoints/1"), ("{w}/checkpoints/1", "checkpoints/1"),
    ("{w}/checkpoints", "checkpoints/2"), ("{w}/params", "params")])
def test_init_from_loads_the_parameters_bitwise_onto_another_mesh(source, spec, expected):
  config = _config(mesh=(1, 8, 1), init_from=spec.format(w=source))
  fresh, mesh = _fresh_state(config)
  state = init_from.apply(config, fresh)
  want = support.read_params(str(source / expected))
  got = support.params_to_numpy(state.params)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got),
                                                      jax.tree.leaves(support.params_to_numpy(fresh.params))))
  for leaf, before in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params)):
    assert leaf.sharding == before.sharding and dict(leaf.sharding.mesh.shape) == dict(mesh.shape)
  assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(state.params))
  # Parameters only: the step, rng and optimizer state are the new run's own.
  assert int(state.step) == 0 and np.array_equal(np.asarray(state.rng), np.asarray(fresh.rng))
  for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(fresh.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_empty_init_from_leaves_the_state_alone():
  config = _config(mesh=(8, 1, 1))
  fresh, _ = _fresh_state(config)
  assert init_from.apply(config, fresh) is fresh


@pytest.mark.parametrize("spec,message", [
    ("{w}/missing", "does not exist"),
    ("{w}@7", "no committed checkpoint of step 7 in"),
    ("{w}/checkpoints/1@2", "is the checkpoint of step 1; drop @2"),
    ("{w}/tensorboard", "is not a workdir with committed checkpoints"),
])
def test_init_from_that_names_nothing_loadable_is_one_line(source, spec, message):
  with pytest.raises(init_from.InitFromError, match=message) as error:
    init_from.resolve(spec.format(w=source))
  assert "\n" not in str(error.value) and "config.init_from=" in str(error.value)


@pytest.mark.parametrize("key,value,message", [
    ("vocab.text_vocab_size", 256, "vocab.text_vocab_size: source 128, requested 256"),
    ("model.num_layers", 3, "model.num_layers: source 2, requested 3"),
])
def test_a_different_vocabulary_or_preset_is_one_line(source, key, value, message):
  config = _config(mesh=(8, 1, 1), init_from=str(source), **{key: value})
  fresh, _ = _fresh_state(config)
  with pytest.raises(init_from.InitFromError, match=message) as error:
    init_from.apply(config, fresh)
  assert "\n" not in str(error.value) and "different vocabulary or model preset" in str(error.value)


def test_without_a_recorded_config_the_first_differing_parameter_and_both_shapes_are_named(source, tmp_path):
  shutil.copytree(source / "params", tmp_path / "params")  # no config.json beside it
  config = _config(mesh=(8, 1, 1), init_from=str(tmp_path / "params"), **{"model.embed_dim": 64})
  fresh, _ = _fresh_state(config)
  with pytest.raises(init_from.InitFromError) as error:
    init_from.apply(config, fresh)
  assert str(error.value) == (f"config.init_from={str(tmp_path / 'params')!r}: parameter embedding/action_position "
                              "is of shape (32,) in the source but of shape (64,) in this run's model")
  # Another parameter tree (an untied output head) names the first parameter the trees do not share.
  config = _config(mesh=(8, 1, 1), init_from=str(tmp_path / "params"), **{"model.tie_embeddings": False})
  fresh, _ = _fresh_state(config)
  with pytest.raises(init_from.InitFromError, match=r"parameter head/kernel is absent in the source but of shape "
                     r"\(32, \d+\) in this run's model$"):
    init_from.apply(config, fresh)


def test_the_loop_fine_tunes_from_another_run_and_resuming_its_own_checkpoint_wins(source, tmp_path, caplog):
  config = _config(mesh=(1, 8, 1), init_from=str(source), num_train_steps=4, checkpoint_every_steps=2)
  config.data.mixture = "synthetic"
  caplog.set_level(logging.INFO)
  whole = loop.train(config, str(tmp_path / "whole"))
  assert "init_from: started from the parameters of" in caplog.text
  caplog.clear()
  loop.train(config, str(tmp_path / "split"), stop_after_steps=2)
  assert "init_from: started from the parameters of" in caplog.text
  caplog.clear()
  resumed = loop.train(config, str(tmp_path / "split"))
  assert "Resumed from step 2" in caplog.text and "init_from" not in caplog.text
  assert resumed.step == whole.step == 4
  for a, b in zip(jax.tree.leaves(support.params_to_numpy(resumed.state.params)),
                  jax.tree.leaves(support.params_to_numpy(whole.state.params))):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------
# Freezing.
# ---------------------------------------------------------------------------------------------------

def test_the_loop_trains_only_the_unfrozen_part(source, tmp_path):
  """gato-train's path: a frozen embedding stays bitwise the source's, the sequence model moves."""
  config = _config(freeze="embedding", num_train_steps=3, init_from=str(source))
  config.data.mixture = "synthetic"
  result = loop.train(config, str(tmp_path / "frozen"))
  want = support.read_params(str(source / "checkpoints" / "2"))
  got = support.params_to_numpy(result.state.params)
  for a, b in zip(jax.tree.leaves(got["embedding"]), jax.tree.leaves(want["embedding"])):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got["sequence_model"]),
                                                      jax.tree.leaves(want["sequence_model"])))


def _paths(tree) -> list[str]:
  return ["/".join(str(getattr(k, "key", k)) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _train_steps(config, steps=3):
  """(params before, params after, final opt_state) of `steps` jitted train steps on one device."""
  layout = VocabLayout.from_config(config.vocab)
  model_fn = loop.default_model_fn(config, layout)
  model_def, _ = state_lib.abstract_model(model_fn)
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  schedule = optimizer.learning_rate_schedule(config.optimizer, config.num_train_steps)
  _, params, _, rest = nnx.split(model_fn(nnx.Rngs(0, params=1, dropout=2)), nnx.Param, nnx.RngState, ...)
  params = nnx.to_pure_dict(params)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=nnx.to_pure_dict(rest),
                               opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(0)))
  before = support.params_to_numpy(params)
  mesh = partitioning.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}), jax.devices()[:1])
  train_step = jax.jit(step_lib.make_train_step(model_def, tx, schedule))
  rng = np.random.default_rng(0)
  with partitioning.axis_rules(mesh, partitioning.LOGICAL_AXIS_RULES):
    for _ in range(steps):
      batch = features.random_batch(rng, config.batch_size, config.data.sequence_length, layout,
                                    num_patch_positions=config.model.num_patch_positions,
                                    max_obs_positions=config.model.max_obs_positions)
      state, metrics = train_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
      assert float(metrics["finite"]) == 1
  return before, support.params_to_numpy(state.params), state.opt_state


@pytest.mark.parametrize("overrides,frozen_prefixes", [
    ({"freeze": "embedding"}, ("embedding/",)),
    ({"freeze": "sequence_model"}, ("sequence_model/",)),
    ({"train_only": "sequence_model/layers/mlp, axis:vocab"},
     ("embedding/action_position", "embedding/obs", "embedding/patch", "sequence_model/final_norm",
      "sequence_model/layers/attention", "sequence_model/layers/mlp_norm")),  # a path, not a string prefix
])
def test_frozen_parameters_stay_bitwise_and_get_no_optimizer_state(overrides, frozen_prefixes):
  config = _config(**overrides)
  before, after, opt_state = _train_steps(config)
  names = _paths(before)
  frozen = [n for n in names if n.startswith(frozen_prefixes)]
  trainable = [n for n in names if n not in frozen]
  assert frozen and trainable
  for name, a, b in zip(names, jax.tree.leaves(before), jax.tree.leaves(after)):
    if name in frozen:
      np.testing.assert_array_equal(a, b, err_msg=f"{name} is frozen")
    else:
      assert not np.array_equal(a, b), f"{name} trains"
  # AdamW's moments hold exactly the trainable parameters (mu and nu), nothing of the frozen ones.
  held = [p for p, x in zip(_paths(opt_state), jax.tree.leaves(opt_state)) if np.ndim(x) > 0]
  for name in frozen:
    assert not any(p.endswith(name) for p in held), f"optimizer state kept for frozen {name}"
  for name in trainable:
    assert sum(p.endswith(name) for p in held) == 2, f"no AdamW moments for {name}"
  sizes = {n: a.size for n, a in zip(names, jax.tree.leaves(before))}
  assert sum(np.size(x) for x in jax.tree.leaves(opt_state)) - sum(
      np.size(x) for x in jax.tree.leaves(opt_state) if np.ndim(x) == 0) == 2 * sum(sizes[n] for n in trainable)


def test_nothing_frozen_keeps_the_plain_optimizer_state():
  config = _config()
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  tx = optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  assert "inner_states" not in str(jax.eval_shape(tx.init, model_def.abstract_params))[:200]


@pytest.mark.parametrize("overrides,message", [
    ({"freeze": "embeding"}, r"config.freeze: 'embeding' selects no parameter; module paths are .*embedding/"),
    ({"train_only": "axis:nonsense"}, r"config.train_only: 'axis:nonsense' selects no parameter"),
    ({"freeze": "embedding,sequence_model"}, r"leaves no parameter to train"),
])
def test_a_freeze_selection_that_cannot_work_is_one_line(overrides, message):
  config = _config(**overrides)
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  with pytest.raises(optimizer.FreezeError, match=message) as error:
    optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  assert "\n" not in str(error.value)


def test_the_trainable_count_is_logged(caplog):
  config = _config(freeze="embedding")
  layout = VocabLayout.from_config(config.vocab)
  model_def, _ = state_lib.abstract_model(loop.default_model_fn(config, layout))
  caplog.set_level(logging.INFO)
  optimizer.make_optimizer(config, model_def.param_axes, model_def.abstract_params)
  mask = optimizer.trainable_mask(config, model_def.param_axes, model_def.abstract_params)
  trainable, total = optimizer.count_trainable(mask, model_def.abstract_params)
  assert 0 < trainable < total
  assert f"Training {trainable} of {total} parameters" in caplog.text
