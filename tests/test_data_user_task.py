"""A user's own control task: one register_control_task call, a build, and it trains in a mixture."""

import numpy as np
import pytest

pytest.importorskip("gymnasium")
seqio = pytest.importorskip("seqio")
data_pipelines = pytest.importorskip("data_pipelines")

from gato_jax import features
from gato_jax.data import mixtures, pipeline, sources
from testlib import data_testing as testing
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec
from gato_jax.tokenizers import TokenKind


def acrobot_task(name):
  import gymnasium as gym

  def expert(env):
    del env
    return lambda observation, raw_obs, env: 2 if raw_obs[5] > 0 else 0  # pump energy into the swing

  return data_pipelines.ControlTask(
      name=name, spec=TaskSpec(name, {"state": FieldSpec("continuous", (6,))}, ActionSpec("discrete", (), (3,))),
      make_env=lambda seed: gym.make("Acrobot-v1"),
      observation_fn=lambda raw_obs, env: {"state": np.asarray(raw_obs, np.float32)},
      make_expert=expert, max_steps=60, description="Acrobot-v1, energy pumping (test).")


@pytest.mark.slow
def test_registered_control_task_is_picked_up_and_mixes(tmp_path):
  name = "user_acrobot_seqio_test"
  entry = data_pipelines.register_control_task(acrobot_task(name))
  try:
    data_dir = str(tmp_path)
    data_pipelines.build(name, data_dir, episodes=6, validation_episodes=2, return_episodes=2)
    testing.build_control_dataset(data_dir, testing.cartpole_like_spec(), {"train": 6, "validation": 2})
    # The data_dir is the catalogue: both datasets are found with their specs, nothing else is needed.
    refs = sources.discover_datasets(data_dir)
    assert refs[name].spec == entry.task.spec and refs[name].domain == "custom"
    assert refs["tiny_pole"].kind == "control"
    config = testing.tiny_config(data_dir, mixture=f"{name}:3,tiny_pole:1", sequence_length=48, batch_size=8)
    it = pipeline.make_iterator(config, "train", 0, 1, seed=0)
    seen = []
    for _ in range(4):
      batch = it.get_next()
      features.check_batch(batch, 48)
      seen += batch["task_index"].tolist()
    names = mixtures.task_names(pipeline.make_mixture(config))
    mine = names.index(name)
    assert seen.count(mine) > seen.count(1 - mine), "rate 3 : 1"
    rows = batch["task_index"] == mine
    # Acrobot timesteps: 6 observation tokens, the separator, one action token.
    kinds = batch["kinds"][rows][0]
    first = int(np.argmax(kinds == TokenKind.SEPARATOR))
    assert kinds[first - 6:first].tolist() == [TokenKind.OBS_CONTINUOUS] * 6 or first < 6
    assert kinds[first + 1] == TokenKind.ACTION
  finally:
    data_pipelines.unregister(name)
