"""Episode schema (RLDS-style steps), task specs that say how each field is tokenized, and a validator.

An episode is `{"steps": {"observation": {...}, "action": [T, ...], "reward": [T], "is_first": [T],
"is_last": [T], "is_terminal": [T]}}`: one step per action taken (the observation the action was taken
in, the action, the reward it earned). Unlike raw RLDS there is no trailing action-less step: Gato only
ever trains on (observation, action) pairs, so the final observation is dropped at build time.

Observations are (possibly nested) dicts of fields; each field has a `FieldSpec` saying its modality:
  text        a string per step (mission, instruction); tokenized by the SentencePiece vocabulary
  image       HxWx3 uint8, H and W multiples of 16
  discrete    integers in [0, num_values) (num_values <= 1024), any fixed shape
  continuous  floats, any fixed shape; mu-law companded unless `mu_law=False` (already in [-1, 1])

The records that describe "a task or a dataset", one meaning each:
  TaskSpec       (here) what an episode of a task looks like: its fields, their modalities and shapes,
                 and the action space. Recorded in every control dataset's metadata.
  ControlTask    (gato_jax/envs/control.py) a simulator, how its observations become a TaskSpec's fields,
                 and a scripted expert: what data is recorded from and evaluation acts in.
  DatasetEntry   (data_pipelines/registry.py) a dataset gato-data can build: its TFDS builder class.
  DatasetRef     (gato_jax/data/sources.py) a dataset found in a data_dir, as the SeqIO side reads it:
                 kind, TaskSpec, domain (and the link of a foreign dataset read in place).
  ControlDataset (gato_jax/evaluation/datasets.py) a built control dataset joined with its ControlTask,
                 returns and validation demonstrations: what gato-eval scores against.
(`data.tasks.PreprocessingOptions` is not one of them: it holds the preprocessing settings of a run.)
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

MODALITIES = ("text", "image", "discrete", "continuous")
STEP_KEYS = ("observation", "action", "reward", "is_first", "is_last", "is_terminal")
PATCH_SIZE = 16
MAX_DISCRETE = 1024


class EpisodeError(ValueError):
  """A malformed episode; the message names the task, episode, step and field."""


@dataclasses.dataclass(frozen=True)
class FieldSpec:
  modality: str
  shape: tuple[int, ...] = ()
  mu_law: bool = True  # continuous only: False for values already in [-1, 1]
  num_values: int = MAX_DISCRETE  # discrete only: values lie in [0, num_values)

  def __post_init__(self):
    if self.modality not in MODALITIES:
      raise ValueError(f"FieldSpec.modality must be one of {MODALITIES}, got {self.modality!r}")
    object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
    if self.modality == "image":
      if len(self.shape) != 3 or self.shape[2] != 3:
        raise ValueError(f"image FieldSpec.shape must be (H, W, 3), got {self.shape}")
      if self.shape[0] % PATCH_SIZE or self.shape[1] % PATCH_SIZE:
        raise ValueError(f"image sides must be multiples of {PATCH_SIZE} (pad the image), got {self.shape}")
    if self.modality == "discrete" and not 0 < self.num_values <= MAX_DISCRETE:
      raise ValueError(f"discrete FieldSpec.num_values must be in (0, {MAX_DISCRETE}], got {self.num_values}")
    if self.modality == "text" and self.shape:
      raise ValueError(f"text FieldSpec has no shape (one string per step), got {self.shape}")

  @property
  def size(self) -> int:
    """Tokens this field contributes per step (images: patches; text: variable, reported as 0)."""
    if self.modality == "text":
      return 0
    if self.modality == "image":
      return (self.shape[0] // PATCH_SIZE) * (self.shape[1] // PATCH_SIZE)
    return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class ActionSpec:
  """An action space: `discrete` (one int in [0, n)), `multi_discrete` (ints in [0, nvec[i])) or
  `continuous` (floats in [low, high], rescaled linearly to [-1, 1] before binning)."""
  kind: str
  shape: tuple[int, ...] = ()
  num_values: tuple[int, ...] = ()  # discrete: (n,); multi_discrete: nvec flattened row-major
  low: tuple[float, ...] = ()  # continuous: per dimension, flattened row-major
  high: tuple[float, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
    object.__setattr__(self, "num_values", tuple(int(n) for n in self.num_values))
    object.__setattr__(self, "low", tuple(float(x) for x in self.low))
    object.__setattr__(self, "high", tuple(float(x) for x in self.high))
    if self.kind not in ("discrete", "multi_discrete", "continuous"):
      raise ValueError(f"ActionSpec.kind must be discrete, multi_discrete or continuous, got {self.kind!r}")
    if self.kind == "discrete" and (self.shape != () or len(self.num_values) != 1):
      raise ValueError("a discrete ActionSpec has shape () and num_values=(n,)")
    if self.kind == "multi_discrete" and len(self.num_values) != self.size:
      raise ValueError(f"multi_discrete num_values needs {self.size} entries, got {len(self.num_values)}")
    if any(not 0 < n <= MAX_DISCRETE for n in self.num_values):
      raise ValueError(f"discrete action sizes must be in (0, {MAX_DISCRETE}], got {self.num_values}")
    if self.kind == "continuous":
      if len(self.low) != self.size or len(self.high) != self.size:
        raise ValueError(f"continuous ActionSpec needs {self.size} low/high bounds")
      if not all(np.isfinite(self.low + self.high)) or any(l >= h for l, h in zip(self.low, self.high)):
        raise ValueError(f"continuous action bounds must be finite with low < high, got {self.low}, {self.high}")

  @property
  def size(self) -> int:
    """Action tokens per step."""
    return int(np.prod(self.shape, dtype=np.int64))

  @classmethod
  def from_gym_space(cls, space) -> "ActionSpec":
    """Discrete, MultiDiscrete and bounded Box spaces of gymnasium."""
    name = type(space).__name__
    if name == "Discrete":
      if int(space.start) != 0:
        raise ValueError(f"Discrete action spaces must start at 0, got start={space.start}")
      return cls("discrete", (), (int(space.n),))
    if name == "MultiDiscrete":
      return cls("multi_discrete", space.shape, tuple(np.asarray(space.nvec).reshape(-1)))
    if name == "Box":
      return cls("continuous", space.shape, (), tuple(np.asarray(space.low, np.float64).reshape(-1)),
                 tuple(np.asarray(space.high, np.float64).reshape(-1)))
    raise ValueError(f"unsupported action space {space!r}: use Discrete, MultiDiscrete or a bounded Box")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """How a control task's episodes are laid out and tokenized."""
  name: str
  observation: Mapping[str, Any]  # nested dict of FieldSpec
  action: ActionSpec

  def observation_fields(self) -> list[tuple[str, FieldSpec]]:
    """(path, spec) in token order: keys sorted lexicographically at every level; path joined by '/'."""
    return flatten_spec(self.observation)

  def to_dict(self) -> dict:
    return {"name": self.name, "action": self.action.to_dict(),
            "observation": {p: dataclasses.asdict(f) for p, f in self.observation_fields()}}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TaskSpec":
    observation: dict = {}
    for path, field in d["observation"].items():
      node = observation
      *parents, leaf = path.split("/")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = FieldSpec(**field)
    return cls(d["name"], observation, ActionSpec(**d["action"]))


def flatten_spec(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
  out = []
  for key in sorted(tree):
    path = f"{prefix}{key}"
    if isinstance(tree[key], Mapping):
      out.extend(flatten_spec(tree[key], path + "/"))
    else:
      out.append((path, tree[key]))
  return out


def get_path(tree: Mapping[str, Any], path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def _leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
  paths = set()
  for key, value in tree.items():
    if isinstance(value, Mapping):
      paths |= _leaf_paths(value, f"{prefix}{key}/")
    else:
      paths.add(f"{prefix}{key}")
  return paths


def _first_bad_step(bad: np.ndarray) -> int:
  return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def check_layout(shapes: Mapping[str, tuple], action_shape: tuple, spec: TaskSpec, where: str) -> None:
  """The fields against `spec`: the observation's field paths, each one's per-step shape (text: ()) and
  the action's. validate_episode runs it on arrays; a tf.data source runs it on its steps' TensorSpecs
  when the pipeline is built, so a dataset that disagrees with its spec fails before reading."""
  expected = {p for p, _ in spec.observation_fields()}
  if set(shapes) != expected:
    raise EpisodeError(f"{where}: field 'observation': missing {sorted(expected - set(shapes))}, "
                       f"unexpected {sorted(set(shapes) - expected)}; expected exactly {sorted(expected)}")
  for path, field in spec.observation_fields():
    want = () if field.modality == "text" else field.shape
    if tuple(shapes[path]) != want:
      raise EpisodeError(f"{where}: field 'observation/{path}': per-step shape {tuple(shapes[path])}, "
                         f"expected {want} ({field.modality})")
  if tuple(action_shape) != spec.action.shape:
    raise EpisodeError(f"{where}: field 'action': per-step shape {tuple(action_shape)}, expected "
                       f"{spec.action.shape}")


def validate_episode(episode: Mapping[str, Any], spec: TaskSpec, episode_id: Any = "?",
                     where: Optional[str] = None) -> int:
  """Checks one episode (NumPy arrays with a leading time axis) against `spec`; returns its length.

  Raises EpisodeError naming the task, episode, step and field, with the expected form. `where` names
  the episode in messages instead of "task NAME, episode ID" (e.g. a dataset, split and episode index).
  This is the one episode check: builders, importers, recorded rollouts and the tf.data sources (through
  tf.numpy_function, gato_jax.data.readers.check_episode) all call it.
  """
  where = where or f"task {spec.name!r}, episode {episode_id}"
  steps = episode.get("steps") if isinstance(episode, Mapping) else None
  if not isinstance(steps, Mapping):
    raise EpisodeError(f"{where}: expected a dict with a 'steps' dict, got {type(episode).__name__}")
  missing = [k for k in STEP_KEYS if k not in steps]
  if missing:
    raise EpisodeError(f"{where}: steps is missing {missing}; expected keys {list(STEP_KEYS)}")
  length = len(np.asarray(steps["reward"]))
  if length == 0:
    raise EpisodeError(f"{where}: field 'steps': the episode is empty; expected at least one step")

  observation = steps["observation"]
  if not isinstance(observation, Mapping):
    raise EpisodeError(f"{where}: field 'observation': expected a dict of fields")
  paths = _leaf_paths(observation)
  text = {p for p, f in spec.observation_fields() if f.modality == "text"}
  check_layout({p: () if p in text else np.shape(get_path(observation, p))[1:] for p in paths},
               np.shape(steps["action"])[1:], spec, where)

  def check_len(name, value):
    if len(value) != length:
      raise EpisodeError(f"{where}: field {name!r}: has {len(value)} steps, expected {length} like 'reward'")

  found = []  # (step, message) of each field's first bad value
  for path, field in spec.observation_fields():
    name = f"observation/{path}"
    value = get_path(observation, path)
    if field.modality == "text":
      value = list(value)
      check_len(name, value)
      for t, v in enumerate(value):
        if not isinstance(v, (str, bytes)):
          raise EpisodeError(f"{where}, step {t}: field {name!r}: expected a string, got {type(v).__name__}")
      continue
    value = np.asarray(value)
    check_len(name, value)
    if field.modality == "image" and value.dtype != np.uint8:
      raise EpisodeError(f"{where}: field {name!r}: dtype {value.dtype}, expected uint8 HxWx3 images")
    if field.modality == "discrete":
      if not np.issubdtype(value.dtype, np.integer):
        raise EpisodeError(f"{where}: field {name!r}: dtype {value.dtype}, expected integers")
      bad = (value < 0) | (value >= field.num_values)
      if bad.any():
        t = _first_bad_step(bad)
        found.append((t, f"{where}, step {t}: field {name!r}: value outside [0, {field.num_values}): "
                         f"{value[t].reshape(-1)[bad[t].reshape(-1)][:4].tolist()}"))
    if field.modality == "continuous":
      if not np.issubdtype(value.dtype, np.number):
        raise EpisodeError(f"{where}: field {name!r}: dtype {value.dtype}, expected floats")
      bad = ~np.isfinite(value.astype(np.float64))
      if bad.any():
        t = _first_bad_step(bad)
        found.append((t, f"{where}, step {t}: field {name!r}: non-finite value (NaN or inf); "
                         "expected finite floats"))

  action = np.asarray(steps["action"])
  check_len("action", action)
  a = spec.action
  flat = action.reshape(length, -1)
  if a.kind == "continuous":
    finite = np.isfinite(flat.astype(np.float64))
    outside = ~finite | (flat < np.array(a.low) - 1e-6) | (flat > np.array(a.high) + 1e-6)
    expected_form = f"finite floats in [{list(a.low)}, {list(a.high)}]"
  else:
    if not np.issubdtype(action.dtype, np.integer):
      raise EpisodeError(f"{where}: field 'action': dtype {action.dtype}, expected integers")
    outside = (flat < 0) | (flat >= np.array(a.num_values))
    expected_form = f"integers in [0, {list(a.num_values)})"
  if outside.any():
    t = _first_bad_step(outside)
    found.append((t, f"{where}, step {t}: field 'action': {flat[t].tolist()} is outside the action "
                     f"space; expected {expected_form}"))
  if found:  # the earliest bad step: a NaN action at step 17 is the cause of a NaN observation at 18
    raise EpisodeError(min(found, key=lambda bad: bad[0])[1])

  for key in ("reward", "is_first", "is_last", "is_terminal"):
    check_len(key, np.asarray(steps[key]))
  reward = np.asarray(steps["reward"], np.float64)
  if not np.isfinite(reward).all():
    raise EpisodeError(f"{where}, step {_first_bad_step(~np.isfinite(reward))}: field 'reward': non-finite")
  if not bool(np.asarray(steps["is_first"])[0]):
    raise EpisodeError(f"{where}, step 0: field 'is_first': the first step must have is_first=True")
  return length


def episode_return(episode: Mapping[str, Any]) -> float:
  return float(np.sum(np.asarray(episode["steps"]["reward"], np.float64)))


def stack_steps(steps: Sequence[Mapping[str, Any]], _prefix: str = "") -> dict:
  """Turns a list of per-step dicts (as a rollout produces them) into one dict of stacked arrays.

  Every step must have step 0's keys and shapes; an EpisodeError names the first step and field that
  differ (a simulator or observation_fn that changes its output mid-episode).
  """
  if not steps:
    return {}
  first = steps[0]
  out = {}
  for key, value in first.items():
    name = f"{_prefix}{key}"
    for t, s in enumerate(steps):
      if not isinstance(s, Mapping) or key not in s:
        got = sorted(s) if isinstance(s, Mapping) else type(s).__name__
        raise EpisodeError(f"step {t}: field {name!r} is missing (the step has {got}); expected the keys "
                           f"of step 0: {sorted(first)}")
    if isinstance(value, Mapping):
      out[key] = stack_steps([s[key] for s in steps], f"{name}/")
    elif isinstance(value, (str, bytes)):
      out[key] = [s[key] for s in steps]
    else:
      arrays = [np.asarray(s[key]) for s in steps]
      for t, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
          raise EpisodeError(f"step {t}: field {name!r}: shape {a.shape}, expected {arrays[0].shape} as at "
                             "step 0")
      out[key] = np.stack(arrays)
  return out
