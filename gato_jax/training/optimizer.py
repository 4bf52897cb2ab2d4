"""AdamW with Gato's learning-rate schedule, a weight-decay mask, optional gradient clipping and freezing.

Schedule (the paper's appendix, docs/METHOD.md): linear warm-up from `init_learning_rate` to
`peak_learning_rate` over `warmup_steps`, then cosine decay to `peak_learning_rate / decay_factor` at
`num_train_steps`.

Weight decay applies to matrices only: a parameter is decayed iff it has at least two dimensions
besides a scanned `layers` axis. So kernels, conv filters and every embedding / position table are
decayed; norm scales and biases (one dimension, or [layers, d] when layers are scanned) are not.

Gradient accumulation is NOT done here (no optax.MultiSteps): the train step scans over micro-batches
and applies one update per step (see training/step.py), so `step`, the schedule, checkpoints and logs
all count optimizer updates, and no accumulator buffer lives in the optimizer state.

Freezing (fine-tuning): `config.train_only` / `config.freeze` select parameters by comma-separated
patterns, each either a module path (`embedding`, `sequence_model/layers`, globs like
`sequence_model/*/mlp`; a pattern matches a path or any of its parent modules) or `axis:NAME`, every
parameter annotated with that logical axis (`axis:vocab`: the token table). A parameter trains iff it
matches `train_only` (or that is empty) and does not match `freeze`. Frozen parameters go through
`optax.set_to_zero` inside `optax.multi_transform`, so their update is exactly zero and AdamW keeps no
moments for them (the optimizer state holds only the trainable leaves); gradient clipping then
measures the trainable gradients alone. With nothing frozen the optimizer is the plain chain, so
existing checkpoints keep their optimizer-state layout.
"""

import fnmatch
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np
import optax

TRAIN, FROZEN = "train", "frozen"


class FreezeError(ValueError):
  """`config.train_only` / `config.freeze` select nothing, or leave nothing to train."""


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


def _patterns(value) -> list[str]:
  return [p.strip().strip("/") for p in str(value or "").split(",") if p.strip().strip("/")]


def _flat(tree) -> list[tuple[str, Any]]:
  is_leaf = lambda x: x is None or isinstance(x, tuple)
  return [("/".join(str(getattr(k, "key", k)) for k in path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]]


def _matches(pattern: str, path: str, axes) -> bool:
  if pattern.startswith("axis:"):
    return pattern[len("axis:"):] in (axes or ())
  parts = path.split("/")
  return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def trainable_mask(config, param_axes: Mapping[str, Any], abstract_params: Mapping[str, Any]) -> Any:
  """True for the parameters that train under `config.train_only` / `config.freeze` (module docstring);
  a pattern that selects no parameter, or a selection that leaves nothing to train, is an error."""
  selections = {key: _patterns(config.get(key, "")) for key in ("train_only", "freeze")}
  paths = _flat(param_axes)
  for key, patterns in selections.items():
    for pattern in patterns:
      if not any(_matches(pattern, path, axes) for path, axes in paths):
        groups = sorted({path.rsplit("/", 1)[0] for path, _ in paths})
        raise FreezeError(f"config.{key}: {pattern!r} selects no parameter; module paths are "
                         f"{', '.join(groups)} (globs allowed), or use axis:<logical axis name>")

  def trains(path, axes):
    chosen = not selections["train_only"] or any(_matches(p, path, axes) for p in selections["train_only"])
    return chosen and not any(_matches(p, path, axes) for p in selections["freeze"])

  flat = [trains(path, axes) for path, axes in paths]
  if not any(flat):
    raise FreezeError(f"config.train_only={config.get('train_only', '')!r} with config.freeze="
                     f"{config.get('freeze', '')!r} leaves no parameter to train")
  treedef = jax.tree.structure(abstract_params)
  return jax.tree.unflatten(treedef, flat)


def count_trainable(mask, abstract_params) -> tuple[int, int]:
  """(trainable, total) parameter counts."""
  sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params)]
  return sum(n for n, m in zip(sizes, jax.tree.leaves(mask)) if m), sum(sizes)


def make_optimizer(config, param_axes: Mapping[str, Any], abstract_params: Mapping[str, Any]
                   ) -> optax.GradientTransformation:
  """The optax chain: [clip by global norm] -> AdamW(schedule, b1, b2, eps, masked weight decay),
  on the trainable parameters only when some are frozen."""
  c = config.optimizer
  schedule = learning_rate_schedule(c, config.num_train_steps)
  adamw = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                      mask=weight_decay_mask(param_axes, abstract_params))
  tx = adamw
  if c.grad_clip_norm and c.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), adamw)
  mask = trainable_mask(config, param_axes, abstract_params)
  trainable, total = count_trainable(mask, abstract_params)
  logging.info("Training %d of %d parameters (%.1f%%; train_only=%r, freeze=%r).", trainable, total,
               100.0 * trainable / max(total, 1), config.get("train_only", ""), config.get("freeze", ""))
  if trainable == total:
    return tx
  labels = jax.tree.map(lambda m: TRAIN if m else FROZEN, mask)
  return optax.multi_transform({TRAIN: tx, FROZEN: optax.set_to_zero()}, labels)
