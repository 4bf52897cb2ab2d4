"""Flags shared by the gato-* entry points, defined once so that any of them can be imported together."""

from absl import app
from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py); "
                                         "override any key with --config.key=value.", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory: checkpoints, TensorBoard logs, the "
                              "resolved config and evaluation reports.")


def require(*holders) -> None:
  """Fails with a usage message naming each required flag left unset (absl's mark_flags_as_required
  would apply to every entry point importing this module, not just the one being run)."""
  missing = [h.name for h in holders if h.value is None]
  if missing:
    raise app.UsageError(f"missing required flags: {', '.join('--' + m for m in missing)}")
