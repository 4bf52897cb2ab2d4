"""The stepping API: Agent.from_checkpoint (workdir, step dir, exported params), reset/act, the gymnasium
wrapper on a user's unregistered env, one-line refusals, and the README's example run verbatim."""

import contextlib
import io
import os
import re

from flax import nnx
import jax
import numpy as np
import pytest

from gato_jax import checkpointing, partitioning
from gato_jax.acting import loading
from gato_jax.acting.gym_env import GatoActingEnv
from gato_jax.acting.stepping import Agent
from gato_jax.envs import control
from testlib import eval_testing as testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny model and a workdir holding it as checkpoint 3 (the way training writes it)."""
  config = testing.tiny_config()
  model = testing.tiny_model(config, seed=4)
  workdir = str(tmp_path_factory.mktemp("run") / "demo_output")
  testing.write_checkpoint(config, workdir, step=3, model=model)
  return config, model, workdir


def _rollout(agent, task, seed, steps):
  env = GatoActingEnv(task.make_env(seed), agent)
  env.reset(seed=seed)
  actions = []
  for _ in range(steps):
    _, _, terminated, truncated, info = env.step()
    actions.append(np.asarray(info["action"]).tolist())
    if terminated or truncated:
      break
  return actions


@pytest.mark.slow  # four agents, four compilations
def test_from_checkpoint_acts_like_the_model_it_was_written_from(trained):
  config, model, workdir = trained
  task = testing.counting_task(length=12)  # a user's own env and TaskSpec, registered nowhere
  from_memory = Agent(model, loading.load(workdir).layout, task.spec, greedy=True, context_length=64)
  expected = _rollout(from_memory, task, seed=5, steps=12)
  step_dir = os.path.join(workdir, "checkpoints", "3")
  for path in (workdir, step_dir):
    agent = Agent.from_checkpoint(path, task=task.spec, greedy=True, context_length=64)
    assert _rollout(agent, task, seed=5, steps=12) == expected
    assert agent.steps == len(expected) == 12
  exported = os.path.join(os.path.dirname(workdir), "params")
  checkpointing.export_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)), exported)
  agent = Agent.from_checkpoint(exported, task=task.spec, config=config, greedy=True, context_length=64)
  assert _rollout(agent, task, seed=5, steps=12) == expected


def test_reset_starts_a_new_episode_and_a_prompt_conditions_it(trained):
  _, _, workdir = trained
  task = testing.counting_task(length=6)
  agent = Agent.from_checkpoint(workdir, task=task.spec, greedy=True, context_length=64)
  observation = {"state": np.zeros(3, np.float32)}
  first = [agent.act(observation) for _ in range(3)]
  agent.reset()
  assert agent.steps == 0 and [agent.act(observation) for _ in range(3)] == first
  env = task.make_env(0)
  demo = control.run_episode(task, env, task.make_expert, 1)
  agent.reset(prompt=demo)
  assert agent._agent.histories[0].prompt  # pylint: disable=protected-access
  assert all(int(a) in (0, 1) for a in (agent.act(observation) for _ in range(3)))


def test_bad_input_is_one_line(trained):
  _, _, workdir = trained
  task = testing.counting_task()
  with pytest.raises(loading.LoadError, match="is not a directory"):
    Agent.from_checkpoint(os.path.join(workdir, "nope"), task=task.spec)
  with pytest.raises(loading.LoadError, match="unknown control task 'no_such_task'"):
    Agent.from_checkpoint(workdir, task="no_such_task")
  with pytest.raises(loading.LoadError, match="pass config="):
    Agent.from_checkpoint(os.path.dirname(workdir), task=task.spec)  # neither a workdir nor a checkpoint
  agent = Agent.from_checkpoint(workdir, task=task.spec)
  with pytest.raises(ValueError, match="missing field 'state'"):
    agent.act({"position": [0.0, 0.0, 0.0]})


def test_the_readme_example_runs_verbatim(trained, monkeypatch):
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  section = readme[readme.index("## Deploying a checkpoint"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  _, _, workdir = trained
  monkeypatch.chdir(os.path.dirname(workdir))  # the example reads ./demo_output
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  assert re.fullmatch(r"return \d+\.0; the same agent without gymnasium: [01]\n", out.getvalue()), out.getvalue()


def test_params_load_onto_a_mesh_and_act_the_same(trained):
  _, _, workdir = trained
  task = testing.counting_task(length=6)
  observation = {"state": np.array([0.5, -0.25, 1.0], np.float32)}
  alone = Agent.from_checkpoint(workdir, task=task.spec, greedy=True, context_length=64)
  mesh = partitioning.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  sharded = Agent.from_checkpoint(workdir, task=task.spec, greedy=True, context_length=64, mesh=mesh)
  layers = sharded._agent._params[1]  # pylint: disable=protected-access  # each layer's own buffers, on the mesh
  assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(layers))
  assert [int(alone.act(observation)) for _ in range(4)] == [int(sharded.act(observation)) for _ in range(4)]
