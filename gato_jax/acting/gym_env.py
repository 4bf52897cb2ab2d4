"""A gymnasium wrapper that lets a Gato agent choose the actions of any gymnasium env, given its TaskSpec.

  env = GatoActingEnv(gymnasium.make("CartPole-v1"), agent)
  observation, info = env.reset(seed=0)
  while True:
    observation, reward, terminated, truncated, info = env.step()   # the agent's action; info["action"]
    if terminated or truncated: break

The env need not be registered anywhere: `observation_fn` maps its raw observation to the task's
observation dict (default: a dict passes as is; an array becomes the task's only field) and
`action_fn` the agent's action to the env's (default: a discrete action as a Python int).
"""

from typing import Any, Callable, Mapping, Optional

import gymnasium
import numpy as np

from gato_jax.episodes import TaskSpec


def default_observation_fn(spec: TaskSpec) -> Callable[[Any], Mapping[str, Any]]:
  """A dict passes as is; anything else is the value of the spec's only observation field."""
  fields = spec.observation_fields()

  def observe(raw):
    if isinstance(raw, Mapping):
      return raw
    if len(fields) != 1:
      raise ValueError(f"task {spec.name!r}: the env's observation is not a dict and the task has "
                       f"{len(fields)} observation fields; pass observation_fn=")
    tree: dict = {}
    node = tree
    *parents, leaf = fields[0][0].split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = raw
    return tree

  return observe


def default_action_fn(spec: TaskSpec) -> Callable[[Any], Any]:
  if spec.action.kind == "discrete":
    return lambda action: int(np.asarray(action).reshape(()))
  return lambda action: np.asarray(action)


class GatoActingEnv(gymnasium.Wrapper):
  """`step()` without an action steps the env with the agent's action for the last observation (an
  explicit action overrides the agent for that step and is not recorded in its history)."""

  def __init__(self, env: gymnasium.Env, agent, observation_fn: Optional[Callable[[Any], Mapping]] = None,
               action_fn: Optional[Callable[[Any], Any]] = None):
    super().__init__(env)
    self.agent = agent
    self.observation_fn = observation_fn or default_observation_fn(agent.spec)
    self.action_fn = action_fn or default_action_fn(agent.spec)
    self._last = None

  def reset(self, **kwargs):
    raw, info = self.env.reset(**kwargs)
    self.agent.reset()
    self._last = raw
    return raw, info

  def step(self, action=None):
    if self._last is None:
      raise RuntimeError("GatoActingEnv.step() before reset()")
    agent_action = None
    if action is None:
      agent_action = self.agent.act(self.observation_fn(self._last))
      action = self.action_fn(agent_action)
    raw, reward, terminated, truncated, info = self.env.step(action)
    self._last = raw
    info = dict(info, action=agent_action if agent_action is not None else action)
    return raw, reward, terminated, truncated, info
