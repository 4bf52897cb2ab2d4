"""The one declarative mapping from a foreign episode (RLDS, JAT, Minari) to a TaskSpec, and its NumPy applier.

An `EpisodeMapping` says, by '/'-joined path into a foreign step, which field becomes which observation
field (text, image, discrete, continuous), which fields make the action and its space, where the
reward is, what is dropped and why, and how images whose sides are not multiples of 16 become HxWx3:
  resize        rescale to HxW (bilinear)
  center_crop   keep the centred HxW region (pads where the frame is smaller)
  pad           zero-pad around the frame to HxW (crops where the frame is larger)
and how frames without 3 channels become RGB (`channels`): rgb, gray (1 channel, repeated), last (the
newest frame of a stack of grayscale frames, e.g. JAT's 84x84x4 Atari), drop_alpha (RGBA).

`infer(leaves, ...)` builds a mapping from the source's own description of its fields (a TFDS
FeaturesDict for RLDS, gymnasium spaces for Minari, `datasets` features for JAT, each turned into
`Leaf`s by its importer); `with_overrides` lets a user change any of it; `describe` prints it.
TF-free; its one applier is gato_jax.map_numpy (the converters, evaluation, and RLDS read in place by
gato_jax.data.foreign).
"""

import dataclasses
import json
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from gato_jax.episodes import MAX_DISCRETE, PATCH_SIZE, ActionSpec, FieldSpec, TaskSpec

IMAGE_POLICIES = ("resize", "center_crop", "pad")
CHANNELS = ("rgb", "gray", "last", "drop_alpha")
LAST_STEP = ("keep", "drop")  # drop: the final step only holds the last observation (RLDS convention)
MAX_TOKENS_KEPT = 256  # a continuous field larger than this that looks precomputed is dropped by default


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One field of a foreign step, as its source describes it (and, for numbers, the range seen)."""
  path: str
  dtype: str  # a NumPy dtype name, or "string"
  shape: tuple[int, ...] = ()
  num_values: int = 0  # integers with a known space (gymnasium Discrete / MultiDiscrete max)
  # Declared (gymnasium Box) or observed minimum / maximum: one number for the whole field, or one per
  # element (flattened) so that a gripper's [0, 1] does not widen the bounds of a 5 cm arm delta.
  low: Optional[float | tuple[float, ...]] = None
  high: Optional[float | tuple[float, ...]] = None
  declared: bool = False  # low / high come from a declared space, not from the data
  sized: bool = True  # False: an image whose sides the source leaves undeclared (shape: a sample frame's)

  def bounds(self, size: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(low, high) per element of the flattened field, or None when unknown."""
    if self.low is None or self.high is None:
      return None

    def per_element(value, reduce):
      value = np.asarray(value, np.float64).reshape(-1)
      return value.copy() if value.size == size else np.full(size, reduce(value))
    return per_element(self.low, np.min), per_element(self.high, np.max)

  def extremes(self) -> tuple[Optional[float], Optional[float]]:
    """The smallest low and the largest high (None when unknown)."""
    return tuple(None if v is None else float(f(np.asarray(v, np.float64)))
                 for v, f in ((self.low, np.min), (self.high, np.max)))


@dataclasses.dataclass(frozen=True)
class FieldMap:
  source: str
  modality: str
  shape: tuple[int, ...] = ()  # after mapping; images (H, W, 3)
  num_values: int = MAX_DISCRETE
  mu_law: bool = True
  image_policy: str = "resize"
  channels: str = "rgb"

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
    for key, allowed in (("image_policy", IMAGE_POLICIES), ("channels", CHANNELS)):
      if getattr(self, key) not in allowed:
        raise ValueError(f"mapping field {self.source!r}: {key} must be one of {allowed}, got {getattr(self, key)!r}")
    try:
      self.field_spec()  # modality, image sides, discrete range
    except ValueError as e:
      raise ValueError(f"mapping field {self.source!r}: {e}") from None

  def field_spec(self) -> FieldSpec:
    return FieldSpec(self.modality, self.shape, mu_law=self.mu_law, num_values=self.num_values)


@dataclasses.dataclass(frozen=True)
class ActionMap:
  sources: tuple[str, ...]  # flattened and concatenated in this order (one source keeps its shape)
  kind: str
  shape: tuple[int, ...] = ()
  num_values: tuple[int, ...] = ()
  low: tuple[float, ...] = ()
  high: tuple[float, ...] = ()
  clip: bool = False  # continuous: clip to [low, high] (bounds measured on a sample, not declared)

  def __post_init__(self):
    # Tuples whatever the input (a link file's JSON gives lists), as ActionSpec holds them.
    for key in ("sources", "shape", "num_values", "low", "high"):
      object.__setattr__(self, key, tuple(getattr(self, key)))
    if not self.sources:
      raise ValueError("mapping action: name at least one source field")
    self.action_spec()  # the space must be valid

  def action_spec(self) -> ActionSpec:
    return ActionSpec(self.kind, self.shape, self.num_values, self.low, self.high)


@dataclasses.dataclass(frozen=True)
class EpisodeMapping:
  observation: Mapping[str, FieldMap]  # target path ('/'-joined) -> how it is made
  action: ActionMap
  reward: str = "reward"  # source path; "" when the source has no reward (zeros)
  dropped: Mapping[str, str] = dataclasses.field(default_factory=dict)  # source path -> why
  last_step: str = "keep"

  def __post_init__(self):
    if self.last_step not in LAST_STEP:
      raise ValueError(f"mapping last_step must be one of {LAST_STEP}, got {self.last_step!r}")
    if not self.observation:
      raise ValueError("mapping: no observation field is left (all dropped?)")

  def task_spec(self, name: str) -> TaskSpec:
    return TaskSpec(name, nest((t, f.field_spec()) for t, f in self.observation.items()),
                    self.action.action_spec())

  def sources(self) -> list[str]:
    """Every source path the mapping reads."""
    return sorted({f.source for f in self.observation.values()} | set(self.action.sources)
                  | ({self.reward} if self.reward else set()))

  def to_dict(self) -> dict:
    return {"observation": {k: dataclasses.asdict(v) for k, v in sorted(self.observation.items())},
            "action": dataclasses.asdict(self.action), "reward": self.reward,
            "dropped": dict(self.dropped), "last_step": self.last_step}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "EpisodeMapping":
    return cls({k: FieldMap(**v) for k, v in d["observation"].items()}, ActionMap(**d["action"]),
               d.get("reward", "reward"), dict(d.get("dropped", {})), d.get("last_step", "keep"))

  def with_overrides(self, overrides: Optional[Mapping[str, Any] | str]) -> "EpisodeMapping":
    """A copy with the user's changes: a dict (or JSON text / a path to a JSON file) of
      observation: {target: {field keys...} to change or add (add needs source + modality), or null
                    to drop it}
      action: {ActionMap keys...};  reward: path;  last_step: keep|drop
      image_size: [H, W] for every image field;  image_policy: one policy for every image field."""
    overrides = load_overrides(overrides)
    unknown = set(overrides) - {"observation", "action", "reward", "last_step", "image_size", "image_policy"}
    if unknown:
      raise ValueError(f"mapping overrides: unknown keys {sorted(unknown)}; expected observation, action, "
                       "reward, last_step, image_size, image_policy")
    observation, dropped = dict(self.observation), dict(self.dropped)
    for target, change in (overrides.get("observation") or {}).items():
      if change is None:
        if target not in observation:
          raise ValueError(f"mapping overrides: cannot drop {target!r}: not an observation field "
                           f"({sorted(observation)})")
        dropped[observation.pop(target).source] = "dropped by the user"
      else:
        observation[target] = _build(FieldMap, f"observation/{target}", observation.get(target), change)
        dropped.pop(observation[target].source, None)
    for target, field in observation.items():
      if field.modality == "image" and ("image_size" in overrides or "image_policy" in overrides):
        height, width = overrides.get("image_size", field.shape[:2])
        observation[target] = dataclasses.replace(
            field, shape=(height, width, 3), image_policy=overrides.get("image_policy", field.image_policy))
    action = _build(ActionMap, "action", self.action, overrides.get("action") or {})
    for source in action.sources:
      dropped.pop(source, None)
    return EpisodeMapping(observation, action, overrides.get("reward", self.reward), dropped,
                          overrides.get("last_step", self.last_step))

  def describe(self, name: str = "") -> str:
    """The mapping as a table: what will be tokenized, from where, and what is dropped."""
    spec = self.task_spec(name or "imported")
    lines = [f"task {spec.name}: {sum(f.size for _, f in spec.observation_fields())} observation tokens "
             f"per step (text not counted) + {spec.action.size} action tokens"]
    for target, field in sorted(self.observation.items()):
      detail = {"image": f"{field.shape} via {field.image_policy}, channels {field.channels}",
                "discrete": f"{field.shape} in [0, {field.num_values})",
                "continuous": f"{field.shape}{' mu-law' if field.mu_law else ''}",
                "text": "one string per step"}[field.modality]
      lines.append(f"  observation/{target:<24} <- {field.source:<32} {field.modality:<10} {detail}")
    a = self.action
    space = (f"in [0, {list(a.num_values)})" if a.kind != "continuous"
             else f"in [{_short(a.low)}, {_short(a.high)}]{' (clipped)' if a.clip else ''}")
    lines.append(f"  {'action':<36} <- {' + '.join(a.sources):<32} {a.kind:<10} {a.shape} {space}")
    lines.append(f"  {'reward':<36} <- {self.reward or '(none: zeros)'}")
    lines.append(f"  last step: {self.last_step}")
    for source, why in sorted(self.dropped.items()):
      lines.append(f"  dropped  {source:<32} {why}")
    return "\n".join(lines)


def _build(cls, where: str, base, change: Mapping[str, Any]):
  """`base` with `change` applied (a new `cls` from `change` when there is no base), naming bad keys."""
  keys = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(change) - set(keys))
  if unknown:
    raise ValueError(f"mapping overrides: {where}: unknown keys {unknown}; expected some of {keys}")
  try:
    return dataclasses.replace(base, **change) if base is not None else cls(**change)
  except TypeError as e:  # a new field without source / modality
    raise ValueError(f"mapping overrides: {where}: {e}") from None


def get_path(tree, path: str):
  for key in path.split("/"):
    tree = tree[int(key)] if isinstance(tree, (list, tuple)) else tree[key]
  return tree


def nest(items: Iterable[tuple[str, Any]]) -> dict:
  """{"a/b": x, "c": y} items -> {"a": {"b": x}, "c": y}."""
  tree: dict = {}
  for path, value in items:
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _short(values: Sequence[float]) -> str:
  values = list(values)
  if len(set(values)) == 1:
    return f"{values[0]:g}"
  return "[" + ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "") + "]"


def load_overrides(overrides) -> dict:
  """Overrides as a dict from a dict, JSON text or a JSON file path (None: no overrides)."""
  if overrides is None or overrides == "":
    return {}
  if isinstance(overrides, Mapping):
    return dict(overrides)
  text = str(overrides)
  if not text.lstrip().startswith("{"):
    with open(text) as f:
      text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"mapping overrides: not valid JSON ({e}): {text[:80]!r}") from None


def _round_up(n: int) -> int:
  return -(-int(n) // PATCH_SIZE) * PATCH_SIZE


def field_for(leaf: Leaf, image_size: Optional[Sequence[int]] = None) -> FieldMap | str:
  """The FieldMap inferred for one leaf, or the reason it is dropped."""
  shape, dtype = tuple(leaf.shape), leaf.dtype
  if dtype == "string":
    return FieldMap(leaf.path, "text") if not shape else f"strings of shape {shape} (one string per step)"
  is_uint8_frame = dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)))
  if is_uint8_frame and (not leaf.sized or min(shape[:2]) >= PATCH_SIZE):
    channels = "rgb" if len(shape) == 3 and shape[2] == 3 else ("last" if len(shape) == 3 and
                                                                 shape[2] == 4 else "gray")
    height, width = image_size or (_round_up(shape[0]), _round_up(shape[1]))
    fits = (height, width) == tuple(shape[:2])
    policy = "resize" if image_size and not fits else ("center_crop" if height < shape[0] else "pad")
    if not leaf.sized:  # frames of any size: each is resized, so every one shows the whole view
      policy = "resize"
    return FieldMap(leaf.path, "image", (height, width, 3), image_policy="resize" if fits else policy,
                    channels=channels)
  if dtype == "bool":
    return FieldMap(leaf.path, "discrete", shape, num_values=2)
  low, high = leaf.extremes()
  if np.issubdtype(np.dtype(dtype), np.integer):
    n = leaf.num_values or (int(high) + 1 if high is not None else 0)
    if (low is not None and low < 0) or n > MAX_DISCRETE or n == 0:
      return FieldMap(leaf.path, "continuous", shape)  # a count or id beyond the discrete range
    return FieldMap(leaf.path, "discrete", shape, num_values=max(n, 2))
  if np.issubdtype(np.dtype(dtype), np.number):
    size = int(np.prod(shape, dtype=np.int64))
    if size > MAX_TOKENS_KEPT and "embed" in leaf.path.lower():
      return f"precomputed embedding of {size} floats (add it back with an override)"
    return FieldMap(leaf.path, "continuous", shape)
  return f"unsupported dtype {dtype}"


def action_for(leaves: Sequence[Leaf]) -> ActionMap:
  """The action space of the action leaves: one integer leaf -> discrete / multi_discrete; otherwise
  continuous (booleans as 0/1), bounds from the declared space or [-1, 1] / the observed range."""
  paths = tuple(l.path for l in leaves)
  integer = [np.issubdtype(np.dtype(l.dtype), np.integer) for l in leaves if l.dtype != "string"]
  if len(leaves) == 1 and integer == [True]:
    leaf = leaves[0]
    n = leaf.num_values or (int(leaf.extremes()[1]) + 1 if leaf.high is not None else 0)
    if n <= 0:
      raise ValueError(f"action {leaf.path!r}: integer actions need their number of values; "
                       'override with {"action": {"num_values": [N]}}')
    if leaf.shape in ((), (1,)):
      return ActionMap(paths, "discrete", (), (n,))
    size = int(np.prod(leaf.shape))
    return ActionMap(paths, "multi_discrete", leaf.shape, (n,) * size)
  sizes = [int(np.prod(l.shape, dtype=np.int64)) for l in leaves]
  shape = tuple(leaves[0].shape) if len(leaves) == 1 else (sum(sizes),)
  low, high, clip = [], [], False
  for leaf, size in zip(leaves, sizes):
    if leaf.dtype == "bool":
      lo, hi = np.zeros(size), np.ones(size)
    elif leaf.bounds(size) is None:
      raise ValueError(f"action {leaf.path!r}: no bounds known; override with "
                       '{"action": {"low": [...], "high": [...]}}')
    else:
      lo, hi = leaf.bounds(size)
      if not leaf.declared:  # per element: [-1, 1] where the data stays inside, else the range seen
        inside = (lo >= -1.0) & (hi <= 1.0)
        lo[inside], hi[inside] = -1.0, 1.0
        clip = clip or not inside.all()  # observed, not declared: unseen episodes may go a little beyond
    hi = np.where(hi <= lo, lo + 1.0, hi)
    low += [float(v) for v in lo]
    high += [float(v) for v in hi]
  return ActionMap(paths, "continuous", shape, (), tuple(low), tuple(high), clip)


def infer(leaves: Sequence[Leaf], action: Sequence[str], *, reward: str = "reward",
          ignore: Sequence[str] = (), image_size: Optional[Sequence[int]] = None,
          last_step: str = "keep", strip_prefix: str = "") -> EpisodeMapping:
  """A mapping for a step made of `leaves`: the `action` paths make the action, `reward` the reward,
  `ignore` (episode flags and the like) is skipped silently, every other leaf becomes an observation
  field named by its path without `strip_prefix`, or is dropped with its reason."""
  by_path = {l.path: l for l in leaves}
  missing = [p for p in action if p not in by_path]
  if missing:
    raise ValueError(f"action field(s) {missing} not in the source; its fields: {sorted(by_path)}")
  observation, dropped = {}, {}
  for leaf in leaves:
    if leaf.path in action or leaf.path == reward or leaf.path in ignore:
      continue
    field = field_for(leaf, image_size)
    if isinstance(field, str):
      dropped[leaf.path] = field
      continue
    target = leaf.path[len(strip_prefix):] if strip_prefix and leaf.path.startswith(strip_prefix) else leaf.path
    observation[target.replace("/", "_") if target in observation else target] = field
  return EpisodeMapping(observation, action_for([by_path[p] for p in action]),
                        reward if reward in by_path else "", dropped, last_step)


def gym_leaves(space, path: str) -> list[Leaf]:
  """Leaves of a gymnasium space (Box, Discrete, MultiDiscrete, MultiBinary, Text, nested Dict / Tuple)."""
  kind = type(space).__name__
  if kind == "Dict":
    return [l for key, sub in space.spaces.items() for l in gym_leaves(sub, f"{path}/{key}")]
  if kind == "Tuple":
    return [l for i, sub in enumerate(space.spaces) for l in gym_leaves(sub, f"{path}/{i}")]
  if kind == "Discrete":
    return [Leaf(path, "int64", (), num_values=int(space.start) + int(space.n), low=float(space.start))]
  if kind == "MultiDiscrete":
    return [Leaf(path, "int64", tuple(space.shape), num_values=int(np.max(space.nvec)), low=0.0)]
  if kind == "MultiBinary":
    return [Leaf(path, "int64", tuple(space.shape), num_values=2, low=0.0)]
  if kind == "Text":
    return [Leaf(path, "string")]
  if kind == "Box":
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    finite = bool(np.isfinite(low).all() and np.isfinite(high).all())
    return [Leaf(path, np.dtype(space.dtype).name, tuple(space.shape),
                 low=tuple(low.reshape(-1).tolist()) if finite else None,
                 high=tuple(high.reshape(-1).tolist()) if finite else None, declared=finite)]
  raise ValueError(f"{path}: unsupported gymnasium space {space!r}")
