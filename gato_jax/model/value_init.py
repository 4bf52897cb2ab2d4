"""Ordinal initialisation of the continuous-bin rows of the token table (config.model.continuous_init).

Continuous values become one of `num_continuous_bins` ids after mu-law companding (docs/METHOD.md), and
the paper gives each bin an independent random embedding. Bins are quantised points of one real line,
though: with "smooth", the rows start as random Fourier features of the bin's position u in [0, 1]
(an RBF kernel of length scale `length_scale`, in units of the whole range), mixed with independent
noise of share `noise`. Neighbouring bins then start close, so a bin seen rarely in the data (the tails
of a Meta-World coordinate) begins near its frequent neighbours instead of at a random point, and,
through the tied output layer, the predicted distribution over bins starts smooth, so early probability
mass lands near the right value. Every row keeps the table's std 1/sqrt(width) per element. Discrete
values are categories (BabyAI's packed grid cells, action indices), so their rows stay independent.
Measured effect on the CPU demo: docs/DECISIONS.md.
"""

import math

import jax
import jax.numpy as jnp

CONTINUOUS_INITS = ("normal", "smooth")


def smooth_rows(key, num_rows: int, width: int, *, length_scale: float = 0.02, noise: float = 0.5,
                dtype=jnp.float32) -> jax.Array:
  """[num_rows, width]: random Fourier features of u = row / (num_rows - 1), plus noise; std 1/sqrt(width)."""
  k_freq, k_phase, k_noise = jax.random.split(key, 3)
  u = jnp.linspace(0.0, 1.0, num_rows)[:, None]
  omega = jax.random.normal(k_freq, (1, width)) / length_scale  # RBF spectral density
  phase = jax.random.uniform(k_phase, (1, width), maxval=2 * math.pi)
  features = math.sqrt(2.0) * jnp.cos(u * omega + phase)  # unit variance per element
  rows = math.sqrt(1.0 - noise**2) * features + noise * jax.random.normal(k_noise, (num_rows, width))
  return (rows / math.sqrt(width)).astype(dtype)


def apply_continuous_init(table: jax.Array, key, start: int, stop: int, kind: str) -> jax.Array:
  """The token table with rows [start, stop) re-initialised by `kind` ("normal" leaves it as is)."""
  if kind == "normal":
    return table
  if kind != "smooth":
    raise ValueError(f"config.model.continuous_init={kind!r}; expected one of {CONTINUOUS_INITS}")
  rows = smooth_rows(key, stop - start, table.shape[-1], dtype=table.dtype)
  return table.at[start:stop].set(rows)
