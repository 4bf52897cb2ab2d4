"""The training loop's own config keys, read once: their defaults live in experiments/base.py only."""

import dataclasses

from gato_jax import checkpointing

ON_NONFINITE = ("stop", "skip")


class ConfigError(ValueError):
  """A config the loop cannot honour (one line naming the key)."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """What the loop reads besides the model, data, mesh and optimizer sections (each has its own view)."""
  num_train_steps: int
  checkpoint_every_steps: int
  log_every_steps: int
  batch_size: int
  on_nonfinite: str
  max_consecutive_skips: int  # 0: no limit
  on_unreadable: str
  best_metric: str
  best_mode: str
  peak_flops_per_device: float  # 0: the known accelerator table, or measured on CPU
  memorising_patience: int

  @classmethod
  def from_config(cls, config) -> "RunOptions":
    return cls(int(config.num_train_steps), int(config.checkpoint_every_steps), int(config.log_every_steps),
               int(config.batch_size), str(config.on_nonfinite), int(config.max_consecutive_skips),
               str(config.checkpoint.on_unreadable), str(config.checkpoint.best_metric),
               str(config.checkpoint.best_mode), float(config.peak_flops_per_device),
               int(config.eval.memorising_patience))

  def __post_init__(self):
    for key in ("num_train_steps", "checkpoint_every_steps", "log_every_steps", "batch_size"):
      if getattr(self, key) <= 0:
        raise ConfigError(f"config.{key}={getattr(self, key)} must be positive")
    if self.on_nonfinite not in ON_NONFINITE:
      raise ConfigError(f"config.on_nonfinite={self.on_nonfinite!r} must be one of {ON_NONFINITE}")
    if self.max_consecutive_skips < 0:
      raise ConfigError(f"config.max_consecutive_skips={self.max_consecutive_skips} must be >= 0 (0: no limit)")
    if self.on_unreadable not in checkpointing.ON_UNREADABLE:
      raise ConfigError(f"config.checkpoint.on_unreadable={self.on_unreadable!r} must be one of "
                        f"{checkpointing.ON_UNREADABLE}")
    if self.best_mode not in ("max", "min"):
      raise ConfigError(f"config.checkpoint.best_mode={self.best_mode!r} must be 'max' or 'min'")
