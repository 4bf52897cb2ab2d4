"""Cutting training sequences out of token streams: timestep-aligned windows, prompts, padding (TensorFlow).

A stream is a dict of equally long per-token tensors (tokens, kinds, obs_positions and, for image
tasks, patches, patch_rows, patch_cols); an episode's stream also has `timesteps` (the step of each
token, non-decreasing). All randomness comes from one stateless seed per sequence.

The rules (L + 1 = `length`, the window the feature converter turns into L inputs and L targets):
- Prompt (control only; with probability `prompt_probability`, when another episode is available): a
  run of k WHOLE timesteps of that episode. With probability `prompt_end_fraction` the run ends at the
  episode's last step (goal conditioning), otherwise it starts at a uniformly drawn step. k is uniform
  in [1, k_max], k_max = the most whole steps from that anchor whose tokens fit in
  `floor(max_prompt_fraction * L)` tokens (at least 1, so a prompt always holds a complete step).
- Window: the remaining room R = L + 1 - len(prompt) is filled from the episode starting at a timestep
  start drawn uniformly among the steps that start at or before token max(0, N - R) (N = the
  episode's tokens): windows lie inside the episode whenever it is long enough, and always begin with a
  step's first observation token. The window may end inside a step.
- Text documents: a window of L + 1 tokens at a uniform token offset (the whole document if shorter).
- Whatever is shorter than L + 1 is padded with PAD tokens (id 0, kind PAD); image fields are compact
  (see finish_sequence).
"""

import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from gato_jax.tokenizers import stream as stream_lib
from gato_jax.tokenizers.layout import TokenKind


def uniform_int(u, n):
  """A draw u in [0, 1) -> an int in [0, n) (n >= 1)."""
  n = tf.maximum(tf.cast(n, tf.int32), 1)
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float32)), tf.int32), n - 1)


def step_starts(timesteps):
  """int32 [T + 1]: the first token of every step, then the stream length (steps are contiguous)."""
  n = tf.shape(timesteps)[0]
  num_steps = tf.cond(n > 0, lambda: timesteps[-1] + 1, lambda: tf.constant(0, tf.int32))
  counts = tf.math.bincount(timesteps, minlength=num_steps, maxlength=num_steps, dtype=tf.int32)
  return tf.concat([[0], tf.cumsum(counts)], 0)


def slice_stream(stream, start, stop):
  return {k: v[start:stop] for k, v in stream.items() if k != "timesteps"}


def sample_prompt(stream, u_mode, u_anchor, u_k, budget, end_fraction):
  """Prompt tokens from an episode stream (u_*: uniform draws in [0, 1), see the module docstring)."""
  starts = step_starts(stream["timesteps"])
  num_steps = tf.shape(starts)[0] - 1
  n = starts[-1]

  def from_end():
    # Steps s whose run s..T-1 fits in the budget; those are the last k_max steps.
    k_max = tf.maximum(tf.reduce_sum(tf.cast(n - starts[:-1] <= budget, tf.int32)), 1)
    k = uniform_int(u_k, k_max) + 1
    return starts[num_steps - k], n

  def from_uniform():
    first = uniform_int(u_anchor, num_steps)
    ends = starts[first + 1:]
    k_max = tf.maximum(tf.reduce_sum(tf.cast(ends - starts[first] <= budget, tf.int32)), 1)
    k = uniform_int(u_k, k_max) + 1
    return starts[first], starts[first + k]

  start, stop = tf.cond(u_mode < end_fraction, from_end, from_uniform)
  return slice_stream(stream, start, stop)


def sample_window(stream, u_start, room):
  """Up to `room` tokens of an episode stream from a uniformly drawn eligible timestep start."""
  starts = step_starts(stream["timesteps"])[:-1]
  n = tf.shape(stream["tokens"])[0]
  latest = tf.maximum(n - room, 0)
  eligible = tf.maximum(tf.reduce_sum(tf.cast(starts <= latest, tf.int32)), 1)
  start = tf.gather(tf.concat([starts, [0]], 0), uniform_int(u_start, eligible))
  return slice_stream(stream, start, tf.minimum(start + room, n))


def text_window(stream, u_start, length):
  n = tf.shape(stream["tokens"])[0]
  start = uniform_int(u_start, tf.maximum(n - length, 0) + 1)
  return slice_stream(stream, start, start + length)


def finish_sequence(stream, length):
  """A stream cut to `length` tokens and PAD-padded (id 0, kind PAD), with COMPACT image fields.

  tokens / kinds / obs_positions get exactly `length` entries; patches / patch_rows / patch_cols keep
  only the rows of the sequence's IMAGE tokens, in order (zero rows for a task without images), so
  shuffle buffers and iterator checkpoints never hold zero pixels; the feature converter scatters
  them back to their positions.
  """
  out = {}
  for key in ("tokens", "kinds", "obs_positions"):
    value = stream[key][:length]
    value = tf.pad(value, [[0, length - tf.shape(value)[0]]])
    out[key] = tf.ensure_shape(value, [length])
  images = tf.where(tf.equal(out["kinds"], int(TokenKind.IMAGE)))[:, 0]
  no_images = stream_lib.empty(0, tnp)
  for key in stream_lib.IMAGE_FIELDS:
    out[key] = tf.gather(stream[key], images) if key in stream else no_images[key]
  return out


def control_sequence(episode, other, has_other, seed, length, prompt_probability, prompt_end_fraction,
                     max_prompt_fraction):
  """One sequence of `length` tokens: [prompt from `other`?] + a window of `episode`, padded.

  Returns (stream, diagnostics {has_prompt, prompt_at_end, prompt_length}).
  """
  draws = tf.random.stateless_uniform([5], seed)
  budget = int(max_prompt_fraction * (length - 1))
  use_prompt = has_other & (draws[0] < prompt_probability) & (budget > 0)
  prompt = tf.cond(use_prompt,
                   lambda: sample_prompt(other, draws[1], draws[2], draws[3], budget, prompt_end_fraction),
                   lambda: slice_stream(other, 0, 0))
  prompt_length = tf.minimum(tf.shape(prompt["tokens"])[0], length)
  window = sample_window(episode, draws[4], length - prompt_length)
  diagnostics = {"has_prompt": use_prompt, "prompt_at_end": use_prompt & (draws[1] < prompt_end_fraction),
                 "prompt_length": prompt_length}
  return finish_sequence(stream_lib.concat([prompt, window], tnp), length), diagnostics
