"""SeqIO preprocessors: episodes, documents and captioned images -> sequences of L + 1 tokens.

Each Task chains them (bound with functools.partial; seqio passes `sequence_length`, whose "tokens"
entry is L + 1). Randomness only through seqio's stateless per-example seeds
(`seqio.map_over_dataset(num_seeds=1)`), so a process's stream depends only on (seed, shard).

Control:  tokenize_episodes -> pair_with_previous_episode -> control_sequences
Text:     tokenize_documents -> text_sequences
Captions: caption_sequences (5 (image, caption) pairs per sequence, as the paper)

Graph functions skip autograph (they use tf.cond explicitly): tracing stays fast.
Every sequence carries the stream fields of gato_jax/features.py (before the shift into inputs and
targets) plus diagnostics that mixtures drop: `episode_id` (-1 for non-control) and, for control,
`has_prompt`, `prompt_at_end` and `prompt_length`.
"""

import seqio
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from gato_jax.data import prompting
from gato_jax.episodes import TaskSpec
from gato_jax.tokenizers import stream, tf_ops
from gato_jax.tokenizers.layout import VocabLayout

CAPTION_PAIRS_PER_SEQUENCE = 5


def _length(sequence_length) -> int:
  if not sequence_length or "tokens" not in sequence_length:
    raise ValueError("the Gato tasks need sequence_length={'tokens': L + 1, ...}; use "
                     "gato_jax.data.task_feature_lengths(L)")
  return int(sequence_length["tokens"])


def tokenize_episodes(ds, *, spec: TaskSpec, layout: VocabLayout, vocabulary, max_obs_positions: int,
                      num_patch_positions: int):
  """Dense episodes -> {"stream": whole-episode token stream with `timesteps`, "episode_id"}."""
  needs_text = any(f.modality == "text" for _, f in spec.observation_fields())
  text_tokenizer = vocabulary.text_tokenizer if needs_text else None

  @tf.autograph.experimental.do_not_convert
  def fn(ex):
    stream = tf_ops.tokenize_episode(ex["steps"], spec, layout, text_tokenizer,
                                     max_obs_positions=max_obs_positions,
                                     num_patch_positions=num_patch_positions)
    return {"stream": stream, "episode_id": ex["episode_id"]}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def pair_with_previous_episode(ds):
  """Adds `other`: the previous episode of this process's stream of the task (the prompt source).

  `has_other` is False for the first episode read and whenever the previous one is the same episode
  (a shard holding a single episode), so a prompt always comes from ANOTHER episode.
  """
  stream_spec = ds.element_spec["stream"]
  empty = {k: tf.zeros([0] + s.shape.as_list()[1:], s.dtype) for k, s in stream_spec.items()}
  initial = (empty, tf.constant(-1, tf.int64), tf.constant(False))

  @tf.autograph.experimental.do_not_convert
  def step(state, ex):
    previous, previous_id, seen = state
    out = {"episode": ex["stream"], "other": previous, "episode_id": ex["episode_id"],
           "has_other": seen & tf.not_equal(previous_id, ex["episode_id"])}
    return (ex["stream"], ex["episode_id"], tf.constant(True)), out

  return ds.scan(initial, step)


@seqio.map_over_dataset(num_seeds=1)
@tf.autograph.experimental.do_not_convert
def control_sequences(ex, seed, *, sequence_length, prompt_probability: float, prompt_end_fraction: float,
                      max_prompt_fraction: float):
  stream, diagnostics = prompting.control_sequence(
      ex["episode"], ex["other"], ex["has_other"], seed, _length(sequence_length), prompt_probability,
      prompt_end_fraction, max_prompt_fraction)
  return {**stream, **diagnostics, "episode_id": ex["episode_id"]}


def tokenize_documents(ds, *, layout: VocabLayout, vocabulary, text_key: str = "text"):
  """Documents -> TEXT token streams closed by EOS (`layout` is the task options' own; text ids need
  none of it)."""
  del layout
  text_tokenizer = vocabulary.text_tokenizer

  @tf.autograph.experimental.do_not_convert
  def fn(ex):
    if text_key not in ex:
      raise ValueError(f"text dataset: examples have no {text_key!r} feature; got {sorted(ex)}")
    return tf_ops.tokenize_text(ex[text_key], text_tokenizer)

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset(num_seeds=1)
@tf.autograph.experimental.do_not_convert
def text_sequences(stream, seed, *, sequence_length):
  length = _length(sequence_length)
  u = tf.random.stateless_uniform([], seed)
  out = prompting.finish_sequence(prompting.text_window(stream, u, length), length)
  return {**out, "episode_id": tf.constant(-1, tf.int64)}


def caption_sequences(ds, *, sequence_length, layout: VocabLayout, vocabulary, num_patch_positions: int,
                      max_obs_positions: int, pairs: int = CAPTION_PAIRS_PER_SEQUENCE):
  """`pairs` consecutive (image, caption) examples -> [patches, caption tokens, EOS] x pairs, padded.

  Image patches are IMAGE tokens (local positions 0..n-1), captions TEXT tokens (targets); a
  sequence longer than L + 1 loses its tail.
  """
  length = _length(sequence_length)
  text_tokenizer = vocabulary.text_tokenizer
  for key in ("image", "caption"):
    if key not in ds.element_spec:
      raise ValueError(f"captions dataset: examples have no {key!r} feature; got {sorted(ds.element_spec)}")
  h, w = ds.element_spec["image"].shape[:2]
  if h is None or w is None or h % stream.PATCH_SIZE or w % stream.PATCH_SIZE:
    raise ValueError(f"captions dataset: images need a static HxW, multiples of {stream.PATCH_SIZE}; got "
                     f"{ds.element_spec['image'].shape}")
  del layout  # text ids need none of it

  @tf.autograph.experimental.do_not_convert
  def pair(ex):
    image = stream.of_image(tf.cast(ex["image"], tf.uint8), num_patch_positions, max_obs_positions, tnp)
    caption = stream.with_image_fields(tf_ops.tokenize_text(ex["caption"], text_tokenizer), tnp)
    return stream.concat([image, caption], tnp)

  @tf.autograph.experimental.do_not_convert
  def sequence(batch):
    out = prompting.finish_sequence({k: v.values for k, v in batch.items()}, length)
    return {**out, "episode_id": tf.constant(-1, tf.int64)}

  ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.ragged_batch(pairs, drop_remainder=True)
  return ds.map(sequence, num_parallel_calls=tf.data.AUTOTUNE)

