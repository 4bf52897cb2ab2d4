"""Control tasks rebuilt from a dataset's metadata: the environment its importer recorded (a Minari
dataset's gymnasium EnvSpec) and the mapping that turned its observations into the TaskSpec's.

`gato_jax.envs.registry.task_for_dataset` calls `task_from_metadata` for a dataset that is not a
registered ControlTask but whose metadata has `recorded_env`:
  {"env_spec": gymnasium EnvSpec JSON, "observation_root": the mapping's path of the raw observation,
   "source": e.g. "minari:cartpole/expert-v0"}
plus `task_spec` and `mapping` (gato_jax.mapping.EpisodeMapping.to_dict()). Importing this module
is TF- and JAX-free (the mapping and its NumPy applier are too): gato-eval's GIF process unpickles
`make_env` (by reference to this module) next to MuJoCo's renderer, which crashes with TensorFlow loaded.
"""

import functools
from typing import Any, Mapping

import numpy as np

from gato_jax.envs.control import ControlTask
from gato_jax.episodes import TaskSpec
from gato_jax.map_numpy import map_observation
from gato_jax.mapping import EpisodeMapping

DEFAULT_MAX_STEPS = 1000


def make_env(env_spec_json: str, seed: int):
  """The recorded environment (seed unused: episodes are seeded by reset)."""
  del seed
  import gymnasium as gym  # pylint: disable=g-import-not-at-top  # optional simulator, only when acting
  from gymnasium.envs.registration import EnvSpec  # pylint: disable=g-import-not-at-top  # optional simulator
  return gym.make(EnvSpec.from_json(env_spec_json))


def _observe(mapping, root: str, raw_obs, env):
  del env
  return map_observation(mapping, raw_obs, root)


def _env_action(kind: str, shape: tuple, action):
  if kind == "discrete":
    return int(np.asarray(action).reshape(()))
  dtype = np.float32 if kind == "continuous" else np.int64
  return np.asarray(action, dtype).reshape(shape)


def _no_expert(name: str, env):
  del env
  raise ValueError(f"task {name!r} was imported from recorded episodes: it has no scripted expert "
                   "(evaluate a checkpoint or the random policy)")


def task_from_metadata(name: str, metadata: Mapping[str, Any]) -> ControlTask:
  """The ControlTask acting in the environment recorded in `metadata` (see the module docstring)."""
  missing = [k for k in ("recorded_env", "task_spec", "mapping") if k not in metadata]
  recorded = metadata.get("recorded_env") or {}
  if missing or "env_spec" not in recorded:
    raise KeyError(f"dataset {name!r}: its metadata lacks {missing or ['recorded_env.env_spec']}; "
                   "re-import it with gato-data import")
  spec = TaskSpec.from_dict(metadata["task_spec"])
  action = spec.action
  return ControlTask(
      name=name, spec=spec,
      make_env=functools.partial(make_env, recorded["env_spec"]),
      observation_fn=functools.partial(_observe, EpisodeMapping.from_dict(metadata["mapping"]),
                                       recorded.get("observation_root", "observation")),
      make_expert=functools.partial(_no_expert, name),
      action_fn=functools.partial(_env_action, action.kind, action.shape),
      max_steps=int(metadata.get("max_steps") or DEFAULT_MAX_STEPS),
      description=f"Recorded environment of {recorded.get('source', name)}.",
      domain=str(metadata.get("domain") or "recorded"))
