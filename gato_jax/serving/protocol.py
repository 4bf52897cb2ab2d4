"""gato-serve's wire format: JSON observations, prompt episodes and actions to and from NumPy, checked
against the task's TaskSpec so a malformed request gets one line naming the field and what was expected.

  POST   /sessions              {"task": "cartpole", "prompt": EPISODE?, "seed": 0?} -> {"session", "task", "spec"}
  POST   /sessions/{id}/act     {"observation": {"state": [0.1, ...]}}              -> {"action", "step"}
  DELETE /sessions/{id}                                                              -> {"closed"}
  GET    /health, /metrics

EPISODE = {"steps": {"observation": {field: [T, ...]}, "action": [T, ...], "reward": [T]}} (a
demonstration whose end prompts the agent). Images are nested lists of uint8 [H, W, 3]; text a string.
"""

from typing import Any, Mapping

import numpy as np

from gato_jax.episodes import FieldSpec, TaskSpec, get_path

_DTYPES = {"continuous": np.float32, "discrete": np.int64, "image": np.uint8}


def field(body: Any, name: str, kind: type, where: str = "request"):
  """body[name], which must be of `kind` (one line naming it otherwise)."""
  if not isinstance(body, Mapping):
    raise ValueError(f"{where} must be a JSON object, got {type(body).__name__}")
  if name not in body:
    raise ValueError(f"{where} is missing field {name!r}")
  value = body[name]
  if not isinstance(value, kind):
    raise ValueError(f"{where}: field {name!r} must be a {kind.__name__}, got {type(value).__name__}")
  return value


def _value(value, spec: FieldSpec, name: str, stacked: bool):
  if spec.modality == "text":
    if stacked:
      return np.asarray(value, object)
    if not isinstance(value, str):
      raise ValueError(f"{name}: expected a string (text field), got {type(value).__name__}")
    return value
  try:
    array = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    raise ValueError(f"{name}: expected numbers of shape {spec.shape}") from None
  if not np.isfinite(array).all():
    raise ValueError(f"{name}: has a NaN or infinite value")
  if spec.modality in ("discrete", "image"):
    low, high = (0, 256) if spec.modality == "image" else (0, spec.num_values)
    if (array != np.round(array)).any() or (array < low).any() or (array >= high).any():
      raise ValueError(f"{name}: expected integers in [0, {high})")
  shape = array.shape[1:] if stacked else array.shape
  if shape != spec.shape:
    raise ValueError(f"{name}: shape {shape}, expected {spec.shape}")
  return array.astype(_DTYPES[spec.modality])


def observation_from_json(observation: Any, spec: TaskSpec, stacked: bool = False) -> dict:
  """The observation dict of `spec` from JSON (stacked: every field has a leading time axis)."""
  if not isinstance(observation, Mapping):
    raise ValueError(f"task {spec.name!r}: observation must be a JSON object of its fields "
                     f"{[p for p, _ in spec.observation_fields()]}")
  tree: dict = {}
  for path, f in spec.observation_fields():
    try:
      value = get_path(observation, path)
    except (KeyError, TypeError):
      raise ValueError(f"task {spec.name!r}: observation is missing field {path!r}") from None
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = _value(value, f, f"task {spec.name!r}: observation/{path}", stacked)
  return tree


def episode_from_json(episode: Any, spec: TaskSpec) -> dict:
  """A prompt episode ({"steps": {"observation", "action", "reward"}}) as stacked NumPy steps."""
  steps = field(field({"prompt": episode}, "prompt", dict), "steps", dict, where="prompt")
  reward = np.asarray(field(steps, "reward", list, where="prompt.steps"), np.float32)
  action = np.asarray(field(steps, "action", list, where="prompt.steps"))
  observation = observation_from_json(field(steps, "observation", dict, where="prompt.steps"), spec, stacked=True)
  lengths = {len(reward), len(action)} | {len(v) for _, v in _leaves(observation)}
  if len(lengths) != 1:
    raise ValueError(f"task {spec.name!r}: prompt steps disagree in length ({sorted(lengths)})")
  return {"steps": {"observation": observation, "action": action, "reward": reward}}


def _leaves(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", v


def action_to_json(action) -> Any:
  return np.asarray(action).tolist()


def episode_to_json(episode: Mapping[str, Any]) -> dict:
  """A stacked episode (as datasets and control.run_episode give) as the JSON a prompt is sent as."""
  steps = episode["steps"]

  def plain(tree):
    return {k: plain(v) if isinstance(v, Mapping) else np.asarray(v).tolist() for k, v in tree.items()}

  return {"steps": {"observation": plain(steps["observation"]), "action": np.asarray(steps["action"]).tolist(),
                    "reward": np.asarray(steps["reward"]).tolist()}}
