"""`config.eval` and `config.evals` read once: each evaluator's typed options, and the table of evaluators.

`config.evals` is big_vision's table: `{name: {type, every_steps, <config.eval key>: value, ...}}`.
`type` picks the module (TYPES), `every_steps` its cadence during training (-1: at every checkpoint,
0: gato-eval only), and any other key overrides that `config.eval` value for this evaluator alone,
so `config.eval` stays the shared defaults that users and tests already set.
"""

import dataclasses
from typing import Any

from gato_jax.model.options import require

TYPES = ("offline", "control", "captions")
AT_CHECKPOINTS, NEVER = -1, 0  # every_steps values with a meaning of their own
PROMPTS = ("demo", "none")


class EvalConfigError(ValueError):
  """An evaluation setting that cannot run; the message names the config key."""


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """Every `config.eval` value the evaluators use; field names are the config keys (experiments/base.py
  documents them)."""
  tasks: tuple[str, ...]
  episodes_per_task: int
  max_steps: int
  greedy: bool
  temperature: float
  seed: int
  num_envs: int
  prompt: str
  prompt_tokens: int
  roll_keep: float
  context_length: int
  confidence: float
  bootstrap_samples: int
  offline: bool
  offline_batch_size: int
  offline_batches: int
  captions: int
  caption_temperature: float
  caption_max_tokens: int
  gif: bool
  gif_max_frames: int
  watch_interval_s: float
  watch_timeout_s: float
  memorising_patience: int

  def __post_init__(self):
    need = lambda ok, key, expected: require(ok, "config.eval", key, getattr(self, key), expected,
                                             EvalConfigError)
    for key in ("episodes_per_task", "num_envs", "offline_batch_size", "bootstrap_samples"):
      need(getattr(self, key) > 0, key, "a positive int")
    for key in ("max_steps", "prompt_tokens", "context_length", "offline_batches", "captions",
                "caption_max_tokens", "gif_max_frames", "memorising_patience"):
      need(getattr(self, key) >= 0, key, "an int >= 0")
    need(self.prompt in PROMPTS, "prompt", f"one of {PROMPTS}")
    need(0.0 < self.confidence < 1.0, "confidence", "a level in (0, 1)")
    need(0.0 < self.roll_keep <= 1.0, "roll_keep", "a share in (0, 1]")

  @classmethod
  def from_config(cls, config, overrides: dict[str, Any] | None = None, where: str = "config.eval"):
    """`config.eval` (with `overrides` on top); a missing key names the key."""
    section = config.eval.to_dict() if "eval" in config else {}
    section.update(overrides or {})
    values = {}
    for field in dataclasses.fields(cls):
      if field.name not in section:
        if field.name == "memorising_patience":  # configs saved before it existed
          section[field.name] = 3
        else:
          raise EvalConfigError(f"{where}.{field.name} is missing (experiments/base.py has its default)")
      value = section[field.name]
      if field.name == "tasks":
        value = tuple(t.strip() for t in (value.split(",") if isinstance(value, str) else value) if t.strip())
      elif field.type in (int, float, bool):
        try:
          value = field.type(value)
        except (TypeError, ValueError):
          raise EvalConfigError(f"{where}.{field.name}={value!r}; expected a {field.type.__name__}") from None
      values[field.name] = value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """One entry of `config.evals`."""
  name: str
  type: str
  every_steps: int
  options: EvalOptions

  def due(self, step: int, checkpoint_every_steps: int, last: bool) -> bool:
    """Whether this evaluator runs during training after `step` (always after the last one)."""
    every = checkpoint_every_steps if self.every_steps == AT_CHECKPOINTS else self.every_steps
    return every > 0 and (step % every == 0 or last)


def default_evals() -> dict[str, dict[str, Any]]:
  """The table a config without `evals` gets (one saved before it existed): what gato-eval always ran,
  and validation in training (experiments/base.py has the same)."""
  return {"validation": {"type": "offline", "every_steps": AT_CHECKPOINTS},
          "rollouts": {"type": "control", "every_steps": NEVER},
          "captions": {"type": "captions", "every_steps": NEVER}}


def eval_specs(config) -> list[EvalSpec]:
  """`config.evals` (or `default_evals()`) checked and read, in table order."""
  table = config.evals.to_dict() if "evals" in config and config.evals is not None else default_evals()
  option_keys = {f.name for f in dataclasses.fields(EvalOptions)}
  specs = []
  for name, entry in table.items():
    where = f"config.evals.{name}"
    if not isinstance(entry, dict):
      raise EvalConfigError(f"{where}={entry!r}; expected a dict with a `type` ({', '.join(TYPES)})")
    kind = entry.get("type")
    if kind not in TYPES:
      raise EvalConfigError(f"{where}.type={kind!r}; expected one of {TYPES}")
    unknown = sorted(set(entry) - option_keys - {"type", "every_steps"})
    if unknown:
      raise EvalConfigError(f"{where} has unknown key(s) {unknown}; expected type, every_steps or a "
                            "config.eval key")
    every = entry.get("every_steps", NEVER)
    if not isinstance(every, int) or every < AT_CHECKPOINTS:
      raise EvalConfigError(f"{where}.every_steps={every!r}; expected -1 (at every checkpoint), 0 "
                            "(gato-eval only) or a positive number of steps")
    overrides = {k: v for k, v in entry.items() if k in option_keys}
    specs.append(EvalSpec(name, kind, every, EvalOptions.from_config(config, overrides, where)))
  return specs
