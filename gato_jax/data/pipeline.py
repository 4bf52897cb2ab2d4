"""The input pipeline: a mixture read by one process (its shard) -> feature-converted numpy batches.

Training (one call per process):

    it = pipeline.make_iterator(config, "train", jax.process_index(), jax.process_count())
    batch = it.get_next()      # dict of numpy arrays, batch_size // process_count rows (features.py)
    it.save(path); it.restore(path)   # exact resume (tf.train.Checkpoint of the tf.data iterator)

Process p reads only shard p of every task (`seqio.ShardInfo(p, process_count)`: whole TFDS files
when a split has at least process_count files, else every process_count-th episode), so the
processes' data are disjoint and together cover the split. Its stream depends only on
(config, seed, p, process_count): every random choice is a stateless draw from a seed derived from
(seed, p) and the task name, so processes and tasks draw independently.
Its batch is rows [p * b, (p + 1) * b) of the global batch, b = batch_size // process_count, which
is what `jax.make_array_from_process_local_data` expects of each process.

Offline evaluation reads one task's validation split through the same preprocessing, unshuffled and
seeded: `make_eval_dataset(config, "cartpole")`.
"""

from typing import Mapping, Optional

import seqio
import tensorflow as tf
from clu.data.dataset_iterator import TfDatasetIterator

from gato_jax.data import mixtures, sources, tasks
from gato_jax.data.feature_converter import GatoFeatureConverter, task_feature_lengths
from gato_jax.data.sources import DatasetRef


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
  if process_count < 1 or global_batch_size % process_count:
    raise ValueError(f"config.batch_size {global_batch_size} must be a multiple of the process count "
                     f"{process_count}: each process feeds an equal slice of the global batch")
  return global_batch_size // process_count


def _refs(config, datasets) -> dict[str, DatasetRef]:
  """`datasets` (default: every dataset in config.data.data_dir) by name."""
  if datasets is None:
    return sources.discover_datasets(config.data.data_dir)
  return dict(datasets) if isinstance(datasets, Mapping) else {r.name: r for r in datasets}


def make_mixture(config, datasets=None) -> mixtures.GatoMixture:
  """The mixture config.data.mixture names, of this config's Task objects over config.data.data_dir's
  datasets (or `datasets`); nothing is registered. `task_names(make_mixture(config))` says which task
  each `task_index` is."""
  refs = _refs(config, datasets)
  return mixtures.make_mixture(config.data.mixture, tasks.make_tasks(config, refs), refs.values())


def _prepare(config, datasets) -> tuple[seqio.Mixture, dict[str, DatasetRef]]:
  """Resolves config.data.mixture and checks it against the data_dir and L."""
  refs = _refs(config, datasets)
  mixture = make_mixture(config, refs)
  data_dir = sources.expand_data_dir(config.data.data_dir)
  for name in mixtures.task_names(mixture):
    sources.require_dataset(name, data_dir, context=f"mixture {mixture.name!r}: ")
  mixtures.check_sequence_length(mixture.name, mixtures.task_names(mixture), int(config.data.sequence_length),
                                 refs, data_dir)
  return mixture, refs


def check_model_fits(config, datasets=None) -> None:
  """Refuses, before training, a model config that cannot see what config.data.mixture holds (images
  without image tokens), naming the task and the key to change; gato-train calls it."""
  mixture, refs = _prepare(config, datasets)
  mixtures.check_image_tokens(mixture.name, mixtures.task_names(mixture), int(config.model.max_image_tokens),
                              refs, config.data.data_dir)


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True  # the same (seed, shard) must give the same batches
  # The only stateful ops in the map functions are input checks (Assert, CheckNumerics): they hold no
  # state, so the iterator checkpoint may ignore them (the default refuses to save).
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  options.experimental_optimization.map_parallelization = True
  return ds.with_options(options)


def make_dataset(config, split: str = "train", process_index: int = 0, process_count: int = 1,
                 seed: Optional[int] = None, *, shuffle: bool = True, num_epochs: Optional[int] = None,
                 batch: bool = True, in_memory_cache: bool = True, datasets=None) -> tf.data.Dataset:
  """The per-process tf.data pipeline of config.data.mixture (batched unless batch=False).

  in_memory_cache: seqio keeps a task's decoded episodes in memory when its shard has fewer than 10k
  (the demo's datasets); False always re-reads the TFDS files (what large datasets do).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  rows = per_process_batch_size(int(config.batch_size), process_count)
  mixture, _ = _prepare(config, datasets)
  length = int(config.data.sequence_length)
  # Each process samples tasks and draws windows / prompts independently (GatoMixture derives the
  # tasks' seeds from this one); file order does not depend on it (readers.TfdsSource).
  seed = mixtures.stream_seed(config.seed if seed is None else seed, "process", process_index)
  shard = seqio.ShardInfo(process_index, process_count) if process_count > 1 else None
  ds = mixture.get_dataset(task_feature_lengths(length), split=split, shuffle=shuffle, seed=seed,
                           shard_info=shard, num_epochs=num_epochs, log_mixing_proportions=False,
                           try_in_mem_cache=in_memory_cache)
  ds = GatoFeatureConverter()(ds, task_feature_lengths(length))
  if batch:
    ds = ds.batch(rows, drop_remainder=True)
  return _options(ds.prefetch(tf.data.AUTOTUNE))


def make_iterator(config, split: str = "train", process_index: Optional[int] = None,
                  process_count: Optional[int] = None, seed: Optional[int] = None, *,
                  checkpoint: bool = True, datasets=None) -> TfDatasetIterator:
  """A checkpointable iterator of this process's numpy batches (clu's TfDatasetIterator:
  get_next() / save(filename) / restore(filename)). Process index and count default to jax's."""
  if process_index is None or process_count is None:
    import jax  # only here: the data pipeline itself does not need jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  ds = make_dataset(config, split, process_index, process_count, seed, datasets=datasets)
  return TfDatasetIterator(ds, checkpoint=checkpoint)


def make_eval_dataset(config, task_name: str, split: str = "validation", *, batch_size: Optional[int] = None,
                      seed: int = 0, num_epochs: int = 1, process_index: int = 0, process_count: int = 1,
                      prompt_probability: Optional[float] = None, datasets=None) -> tf.data.Dataset:
  """One task's split for offline evaluation: unshuffled, every random choice seeded by `seed`.

  Yields feature-converted examples (batched when batch_size is given: the last batch is padded with
  all-PAD rows whose loss_mask is 0, so every batch has the same shape). task_index is the task's
  index in config.data.mixture when it is part of it, else 0. `prompt_probability` overrides
  config.data.prompt_probability (e.g. 0.0 to score without prompts).
  """
  refs = _refs(config, datasets)
  if task_name not in refs:
    raise ValueError(f"task {task_name!r}: no such dataset in {sources.expand_data_dir(config.data.data_dir)}; "
                     f"found: {sorted(refs)}")
  data_dir = sources.expand_data_dir(config.data.data_dir)
  sources.require_dataset(task_name, data_dir, context="evaluation: ")
  overrides = {} if prompt_probability is None else {"prompt_probability": float(prompt_probability)}
  task = tasks.make_tasks(config, [refs[task_name]], **overrides)[task_name]
  length = int(config.data.sequence_length)
  mixtures.check_sequence_length(f"evaluation of {task_name}", [task_name], length, refs, data_dir)
  try:
    index = mixtures.task_names(make_mixture(config, refs)).index(task_name)
  except ValueError:
    index = 0
  shard = seqio.ShardInfo(process_index, process_count) if process_count > 1 else None
  ds = task.get_dataset(task_feature_lengths(length), split=split, shuffle=False, seed=seed,
                        shard_info=shard, num_epochs=num_epochs)
  ds = ds.map(tf.autograph.experimental.do_not_convert(
      lambda ex: {**{k: ex[k] for k in task.output_features}, "task_index": tf.constant(index)}))
  ds = GatoFeatureConverter()(ds, task_feature_lengths(length))
  if batch_size:
    ds = ds.batch(batch_size).map(tf.autograph.experimental.do_not_convert(lambda b: _pad_batch(b, batch_size)))
  return _options(ds.prefetch(tf.data.AUTOTUNE))


def _pad_batch(batch, batch_size: int):
  def pad(x):
    x = tf.pad(x, [[0, batch_size - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1))
    return tf.ensure_shape(x, [batch_size] + x.shape.as_list()[1:])
  return {k: pad(v) for k, v in batch.items()}
