"""The one reducer of metrics measured on parts (micro-batches, the steps of a logging interval,
validation batches), below training and evaluation, which both report with it."""

from typing import Any, Mapping

import jax.numpy as jnp


def is_count_metric(name: str) -> bool:
  """Token counts add up over micro-batches and steps; every other metric is averaged."""
  return name.startswith(("num_", "tokens_")) or name.endswith("_tokens")


def reduce_metrics(parts: Mapping[str, Any], weights: Mapping[str, Any] | None = None, *, xp=jnp):
  """The one reducer of metrics measured on parts (the micro-batches of a step, the steps of a logging
  interval, validation batches): stacked values [k] -> one value each. Token counts add up; every other
  metric is averaged, weighted by `weights[name]` (its token count per part) when given, else equally."""
  out = {}
  for name, values in parts.items():
    weight = None if weights is None else weights.get(name)
    if is_count_metric(name):
      out[name] = values.sum()
    elif weight is None:
      out[name] = values.mean()
    else:
      out[name] = (values * weight).sum() / xp.maximum(weight.sum(), 1.0)
  return out
