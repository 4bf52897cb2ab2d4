"""The train step: a pure function of (TrainState, global batch), jitted with explicit shardings.

Gradient accumulation scans over micro-batches inside the step (one optimizer update per step).
Micro-batch a takes rows a, a + k, a + 2k, ... of the global batch (k = grad_accum_steps), so every
device already holds its share of every micro-batch and splitting moves no data. Gradients are summed
weighted by each micro-batch's number of loss tokens, which makes the result the gradient of the
token-mean loss over the whole batch, as without accumulation.

A non-finite loss or gradient norm never reaches the parameters: the update is dropped inside the
step (`jnp.where` on every leaf of params, model state and optimizer state) and `finite` = 0 is
reported; the loop then stops or carries on (config `on_nonfinite`).
"""

from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from gato_jax import partitioning
from gato_jax.model import loss_and_metrics
from gato_jax.model.metrics import is_count_metric, reduce_metrics  # pylint: disable=unused-import
from gato_jax.tokenizers.layout import TokenKind
from gato_jax.training.state import ModelDef, TrainState, typed_key

# (model, batch, rng) -> (scalar token-mean training loss, dict of scalar metrics)
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def gato_loss(model, batch, rng):
  """The Gato model's training forward pass (dropout, sampled patch positions) and masked loss."""
  return loss_and_metrics(model(batch, train=True, rng=rng), batch)


def _token_counts(batch) -> dict[str, jax.Array]:
  mask = batch["loss_mask"].astype(jnp.float32)
  return {
      "loss_tokens": mask.sum(),
      "text_tokens": (mask * (batch["target_kinds"] == TokenKind.TEXT)).sum(),
      "action_tokens": (mask * (batch["target_kinds"] == TokenKind.ACTION)).sum(),
  }


def _metric_weight(name: str, counts: Mapping[str, jax.Array]) -> jax.Array | None:
  """How a micro-batch metric is combined: None = summed, else averaged with this weight."""
  if is_count_metric(name):
    return None
  for kind in ("text", "action"):
    if name.startswith(kind + "_"):
      return counts[f"{kind}_tokens"]
  return counts["loss_tokens"]


def _split_micro_batches(batch, k: int):
  """[B, ...] -> [k, B / k, ...] taking rows a, a + k, ... for micro-batch a (no data movement)."""
  def split(x):
    x = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
    spec = jax.sharding.PartitionSpec(None, partitioning.BATCH_AXES, *([None] * (x.ndim - 2)))
    return jax.lax.with_sharding_constraint(x, spec)
  return jax.tree.map(split, batch)


def make_train_step(model_def: ModelDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    loss_fn: LossFn = gato_loss) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """The un-jitted train step; `jit_train_step` adds the shardings."""
  if grad_accum_steps < 1:
    raise ValueError(f"config.optimizer.grad_accum_steps={grad_accum_steps} must be >= 1")

  def loss_and_state(params, model_state, batch, rng):
    model_rng, loss_rng = jax.random.split(rng)
    model = model_def.merge(params, model_rng, model_state)
    loss, metrics = loss_fn(model, batch, loss_rng)
    new_model_state = nnx.to_pure_dict(nnx.split(model, nnx.Param, nnx.RngState, ...)[3])
    return loss, (metrics, new_model_state)

  grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

  def accumulate(params, model_state, batch, rng):
    micro = _split_micro_batches(batch, grad_accum_steps)
    counts = jax.vmap(_token_counts)(micro)
    total = jnp.maximum(counts["loss_tokens"].sum(), 1.0)

    def body(carry, xs):
      grads_sum, model_state = carry
      mb, index, n = xs
      (loss, (metrics, model_state)), grads = grad_fn(params, model_state, mb, jax.random.fold_in(rng, index))
      grads_sum = jax.tree.map(lambda acc, g: acc + g * n, grads_sum, grads)
      return (grads_sum, model_state), dict(metrics, loss=loss)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads_sum, model_state), metrics = jax.lax.scan(
        body, (zeros, model_state), (micro, jnp.arange(grad_accum_steps), counts["loss_tokens"]))
    grads = jax.tree.map(lambda g: g / total, grads_sum)
    metrics = reduce_metrics(metrics, {name: _metric_weight(name, counts) for name in metrics})
    return metrics["loss"], metrics, model_state, grads

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(typed_key(state.rng), state.step)
    if grad_accum_steps == 1:
      (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
      metrics = dict(metrics, loss=loss)
    else:
      loss, metrics, model_state, grads = accumulate(state.params, state.model_state, batch, rng)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              model_state=keep(model_state, state.model_state),
                              opt_state=keep(opt_state, state.opt_state))
    counts = _token_counts(batch)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    metrics.update(grad_norm=grad_norm, param_norm=optax.global_norm(new_state.params),
                   learning_rate=jnp.asarray(schedule(state.step), jnp.float32),
                   finite=finite.astype(jnp.float32), **counts)
    return new_state, metrics

  return train_step


def jit_train_step(train_step, state_shardings: TrainState, batch_shardings: Mapping[str, Any], mesh):
  """`jax.jit` with explicit in/out shardings and the state donated; call it inside
  `partitioning.axis_rules(mesh, rules)` so the model's activation constraints see the rules."""
  return jax.jit(train_step, in_shardings=(state_shardings, dict(batch_shardings)),
                 out_shardings=(state_shardings, partitioning.replicated(mesh)), donate_argnums=0)
