"""The one applier of an EpisodeMapping: foreign steps -> the TaskSpec's episode layout (NumPy, TF-free).

The JAT and Minari converters map whole episodes with `map_steps`; RLDS episodes, read in place by
gato_jax.data.foreign (through tf.numpy_function) and checked by the RLDS importer, with
`map_rlds_steps`; evaluation in a recorded environment maps each simulator observation with
`map_observation`.
"""

import io
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gato_jax.mapping import ActionMap, EpisodeMapping, FieldMap, get_path, nest


def map_image(frames: np.ndarray, field: FieldMap) -> np.ndarray:
  """[T, H, W(, C)] uint8 -> [T, h, w, 3] uint8 with the field's channel rule and image policy."""
  frames = np.asarray(frames)
  if frames.dtype == object:  # encoded frames of undeclared, possibly varying size: one at a time
    return np.stack([map_image(decode_frame(f, field), field)[0] for f in frames]) if len(frames) else (
        np.zeros((0,) + field.shape, np.uint8))
  if frames.ndim == 3:
    frames = frames[..., None]
  frames = {"rgb": lambda x: x, "gray": lambda x: np.repeat(x[..., :1], 3, -1),
            "last": lambda x: np.repeat(x[..., -1:], 3, -1), "drop_alpha": lambda x: x[..., :3]}[
                field.channels](frames)
  height, width = field.shape[:2]
  if frames.shape[1:3] == (height, width):
    return np.ascontiguousarray(frames, np.uint8)
  if field.image_policy == "resize":
    from PIL import Image  # pylint: disable=g-import-not-at-top  # Pillow: resizing only
    return np.stack([np.asarray(Image.fromarray(np.asarray(f, np.uint8)).resize((width, height),
                                                                                 Image.BILINEAR))
                     for f in frames]) if len(frames) else np.zeros((0, height, width, 3), np.uint8)
  return crop_or_pad(frames, height, width)


def decode_frame(encoded: bytes, field: FieldMap) -> np.ndarray:
  """One encoded (PNG, JPEG) frame -> [1, H, W(, C)] uint8; RGB for an rgb field, else its own channels."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  # Pillow: frames of undeclared size only
  image = Image.open(io.BytesIO(encoded))
  return np.asarray(image.convert("RGB") if field.channels == "rgb" else image, np.uint8)[None]


def crop_or_pad(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Centred crop where the frame is larger, centred zero padding where it is smaller (like TF's
  resize_with_crop_or_pad)."""
  out = np.zeros(frames.shape[:1] + (height, width) + frames.shape[3:], np.uint8)
  src, dst = [], []
  for have, want in zip(frames.shape[1:3], (height, width)):
    cut, pad = max(0, (have - want) // 2), max(0, (want - have) // 2)
    n = min(have, want)
    src.append(slice(cut, cut + n))
    dst.append(slice(pad, pad + n))
  out[:, dst[0], dst[1]] = frames[:, src[0], src[1]]
  return out


def map_field(value, field: FieldMap, length: int):
  """A source field's [T, ...] values as the observation field expects them (text: list of str)."""
  if field.modality == "text":
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]
  if field.modality == "image":
    return map_image(value, field)
  value = np.asarray(value)
  dtype = np.int32 if field.modality == "discrete" else np.float32
  if value.dtype.kind not in "biuf":
    return value  # left for the episode validator to name
  return value.astype(dtype).reshape((length,) + field.shape) if value.size == length * int(
      np.prod(field.shape, dtype=np.int64)) else value.astype(dtype)


def _steps(value, source: str, length: int):
  """`value` when it has one entry per step, else a ValueError naming the source field (a JAT column,
  a Minari space path) and both counts."""
  if len(value) != length:
    raise ValueError(f"field {source!r} has {len(value)} steps, expected {length} (one per step, like the "
                     "reward's)")
  return value


def map_action(values: Sequence[np.ndarray], action: ActionMap, length: int) -> np.ndarray:
  flat = np.concatenate([np.asarray(_steps(v, p, length)).reshape(length, -1)
                         for v, p in zip(values, action.sources)], axis=1)
  if action.kind == "continuous":
    flat = flat.astype(np.float32)
    if action.clip:
      flat = np.clip(flat, np.asarray(action.low, np.float32), np.asarray(action.high, np.float32))
  elif np.issubdtype(flat.dtype, np.integer) or flat.dtype == np.bool_:
    flat = flat.astype(np.int32)
  return flat.reshape((length,) + action.shape) if flat.size == length * action.action_spec().size else flat


def map_fields(observation_map: Mapping[str, FieldMap], get: Callable[[str], Any], length: int) -> dict:
  """The nested observation of `length` steps; `get(path)` returns a source field's [T, ...] values."""
  return nest((target, map_field(_steps(get(field.source), field.source, length), field, length))
              for target, field in observation_map.items())


def map_steps(mapping: EpisodeMapping, get: Callable[[str], Any], length: int) -> dict:
  """{"observation": nested fields, "action", "reward"} for `length` steps (see map_fields)."""
  observation = map_fields(mapping.observation, get, length)
  action = map_action([get(p) for p in mapping.action.sources], mapping.action, length)
  reward = (np.asarray(get(mapping.reward), np.float32).reshape(length) if mapping.reward
            else np.zeros(length, np.float32))
  return {"observation": observation, "action": action, "reward": reward}


def map_rlds_steps(mapping: EpisodeMapping, raw: Mapping[str, Any]) -> dict:
  """Dense RLDS steps ([T, ...] arrays with is_first / is_last / is_terminal) -> the episode's steps;
  the last step is dropped when the mapping says the final RLDS step holds only the last observation."""
  length = len(raw["is_first"])
  steps = map_steps(mapping, lambda path: get_path(raw, path), length)
  for key in ("is_first", "is_last", "is_terminal"):
    steps[key] = np.array(raw[key], bool)  # a copy: the flags of the last kept step change below
  if mapping.last_step == "drop" and length:
    terminal = bool(np.asarray(raw["is_terminal"])[-1])
    steps = _take(steps, length - 1)
    if length > 1:
      steps["is_last"][-1] = True
      steps["is_terminal"][-1] |= terminal
  return steps


def _take(tree, n: int):
  """The first n steps of every field of a nested step dict (arrays and lists of strings alike)."""
  return {k: _take(v, n) if isinstance(v, Mapping) else v[:n] for k, v in tree.items()}


def map_observation(mapping: EpisodeMapping, raw_obs, root: str = "observation") -> dict:
  """One simulator observation (the tree whose paths start at `root`) as the TaskSpec's observation."""
  def get(path):
    rel = path[len(root) + 1:] if path.startswith(root + "/") else ("" if path == root else None)
    if rel is None:
      raise KeyError(f"observation mapping reads {path!r}, which is not under {root!r}")
    value = get_path(raw_obs, rel) if rel else raw_obs
    return [value] if isinstance(value, (str, bytes)) else np.asarray(value)[None]
  return _unbatch(map_fields(mapping.observation, get, 1))


def _unbatch(tree: dict) -> dict:
  return {key: _unbatch(value) if isinstance(value, dict) else value[0] for key, value in tree.items()}
