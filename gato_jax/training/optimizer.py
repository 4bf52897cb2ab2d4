"""AdamW with Gato's learning-rate schedule, a weight-decay mask, and optional gradient clipping.

Schedule (GATO_SPEC.md, app.): linear warm-up from `init_learning_rate` to `peak_learning_rate` over
`warmup_steps`, then cosine decay to `peak_learning_rate / decay_factor` at `num_train_steps`.

Weight decay applies to matrices only: a parameter is decayed iff it has at least two dimensions
besides a scanned `layers` axis. So kernels, conv filters and every embedding / position table are
decayed; norm scales and biases (one dimension, or [layers, d] when layers are scanned) are not.

Gradient accumulation is NOT done here (no optax.MultiSteps): the train step scans over micro-batches
and applies one update per step (see training/step.py), so `step`, the schedule, checkpoints and logs
all count optimizer updates, and no accumulator buffer lives in the optimizer state.
"""

from typing import Any, Mapping

import jax
import optax


def learning_rate_schedule(optimizer_config, num_train_steps: int) -> optax.Schedule:
  """Linear warm-up then cosine decay by `decay_factor`, all from `config.optimizer`."""
  c = optimizer_config
  if c.decay_factor < 1:
    raise ValueError(f"config.optimizer.decay_factor={c.decay_factor} must be >= 1 (peak / final)")
  warmup = int(min(c.warmup_steps, num_train_steps))
  return optax.warmup_cosine_decay_schedule(
      init_value=c.init_learning_rate, peak_value=c.peak_learning_rate, warmup_steps=warmup,
      decay_steps=max(num_train_steps, warmup + 1), end_value=c.peak_learning_rate / c.decay_factor)


def weight_decay_mask(param_axes: Mapping[str, Any], abstract_params: Mapping[str, Any]) -> Any:
  """True for parameters that get weight decay (see the module docstring for the rule)."""
  def decayed(axes, x):
    layer_axes = sum(1 for a in (axes or ()) if a == "layers")
    return len(x.shape) - layer_axes >= 2
  return jax.tree.map(decayed, param_axes, abstract_params,
                      is_leaf=lambda x: x is None or isinstance(x, tuple))


def make_optimizer(config, param_axes: Mapping[str, Any], abstract_params: Mapping[str, Any]
                   ) -> optax.GradientTransformation:
  """The optax chain: [clip by global norm] -> AdamW(schedule, b1, b2, eps, masked weight decay)."""
  c = config.optimizer
  schedule = learning_rate_schedule(c, config.num_train_steps)
  adamw = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                      mask=weight_decay_mask(param_axes, abstract_params))
  if c.grad_clip_norm and c.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), adamw)
  return adamw
