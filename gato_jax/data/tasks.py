"""One seqio.Task per dataset of the data_dir, made from the config (registered only when asked).

    from gato_jax.data import tasks
    cartpole = tasks.make_tasks(config)["cartpole"]   # every dataset in config.data.data_dir
    cartpole.get_dataset(tasks.task_feature_lengths(256), "train")

Task names are the dataset names. The datasets and their TaskSpecs are found in the data_dir itself
(sources.discover_datasets reads each one's metadata); the same dataset and options (data_dir,
vocabulary, prompting, ...) give the same Task object, so calling it again is cheap and picks up
datasets built or imported since. `register_all` puts them in seqio's TaskRegistry for code that
looks tasks up by name.
"""

import dataclasses
import functools
import json
from typing import Iterable, Mapping, Optional

import seqio
import tensorflow as tf

from gato_jax.data import foreign, preprocessors, readers, sources
from gato_jax.data.feature_converter import task_feature_lengths
from gato_jax.data.sources import DatasetRef
from gato_jax.data.vocabulary import GatoVocabulary, sentencepiece_model_path
from gato_jax.tokenizers import VocabLayout

__all__ = ["PreprocessingOptions", "make_task", "make_tasks", "output_features", "register_all",
           "task_feature_lengths"]


@dataclasses.dataclass(frozen=True)
class PreprocessingOptions:
  """Everything a task's preprocessing depends on (hashable: it fingerprints registrations)."""
  data_dir: str
  layout: VocabLayout
  sentencepiece_model: str
  prompt_probability: float = 0.25
  prompt_end_fraction: float = 0.5
  max_prompt_fraction: float = 0.5
  shuffle_buffer: int = 1000
  max_obs_positions: int = 512
  num_patch_positions: int = 128

  def __post_init__(self):
    for name in ("prompt_probability", "prompt_end_fraction", "max_prompt_fraction"):
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"config.data.{name} must be in [0, 1], got {value}")
    if self.shuffle_buffer < 1:
      raise ValueError(f"config.data.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")

  @classmethod
  def from_config(cls, config, **overrides) -> "PreprocessingOptions":
    data = config.data
    data_dir = sources.expand_data_dir(data.data_dir)
    options = dict(
        data_dir=data_dir, layout=VocabLayout.from_config(config.vocab),
        sentencepiece_model=sentencepiece_model_path(config.vocab, data_dir),
        prompt_probability=float(data.prompt_probability),
        prompt_end_fraction=float(data.prompt_end_fraction),
        max_prompt_fraction=float(data.max_prompt_fraction),
        shuffle_buffer=int(data.shuffle_buffer),
        max_obs_positions=int(config.model.max_obs_positions),
        num_patch_positions=int(config.model.num_patch_positions))
    options.update(overrides)
    return cls(**options)

  @property
  def vocabulary(self) -> GatoVocabulary:
    return _vocabulary(self.layout, self.sentencepiece_model)


@functools.lru_cache(maxsize=None)
def _vocabulary(layout, path) -> GatoVocabulary:
  return GatoVocabulary(layout, path)  # one object per model: SentencePiece is loaded once


def output_features(vocabulary: GatoVocabulary) -> dict[str, seqio.Feature]:
  """The task-level features (see feature_converter for their shapes)."""
  def other(dtype, rank):
    return seqio.ContinuousFeature(dtype=dtype, rank=rank, required=True)
  return {
      "tokens": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32, rank=1),
      "kinds": other(tf.int32, 1),
      "obs_positions": other(tf.int32, 1),
      "patches": other(tf.uint8, 4),
      "patch_rows": other(tf.int32, 2),
      "patch_cols": other(tf.int32, 2),
  }


def make_task(ref: DatasetRef, options: PreprocessingOptions) -> seqio.Task:
  """The (unregistered) seqio.Task reading dataset `ref` with `options`."""
  vocabulary = options.vocabulary
  data_dir = options.data_dir
  if ref.kind == "control":
    spec = ref.spec if ref.spec is not None else sources.read_task_spec(ref.name, data_dir)
    if ref.link is not None:  # a foreign dataset read in place
      source = foreign.make_source(ref, data_dir)
    else:
      source = readers.EpisodeSource(ref.name, data_dir, spec)
    steps = [
        functools.partial(preprocessors.tokenize_episodes, spec=spec, layout=options.layout,
                          vocabulary=vocabulary, max_obs_positions=options.max_obs_positions,
                          num_patch_positions=options.num_patch_positions),
        preprocessors.pair_with_previous_episode,
        functools.partial(preprocessors.control_sequences, prompt_probability=options.prompt_probability,
                          prompt_end_fraction=options.prompt_end_fraction,
                          max_prompt_fraction=options.max_prompt_fraction),
    ]
  else:
    source = readers.TfdsSource(ref.name, data_dir)
    if ref.kind == "text":
      steps = [functools.partial(preprocessors.tokenize_documents, layout=options.layout,
                                 vocabulary=vocabulary),
               preprocessors.text_sequences]
    else:
      steps = [functools.partial(preprocessors.caption_sequences, layout=options.layout,
                                 vocabulary=vocabulary, num_patch_positions=options.num_patch_positions,
                                 max_obs_positions=options.max_obs_positions)]
  return seqio.Task(ref.name, source, output_features(vocabulary), preprocessors=steps,
                    shuffle_buffer_size=options.shuffle_buffer)


_TASKS: dict[tuple, seqio.Task] = {}  # one Task object per (dataset, options)


def _task(ref: DatasetRef, options: PreprocessingOptions) -> seqio.Task:
  # A TaskSpec (dicts inside) does not hash: the key holds it as JSON.
  key = (ref.name, ref.kind, ref.domain, json.dumps(ref.spec.to_dict() if ref.spec else None, sort_keys=True),
         json.dumps(ref.link, sort_keys=True), options)
  if key not in _TASKS:
    _TASKS[key] = make_task(ref, options)
  return _TASKS[key]


def _as_refs(config, datasets) -> list[DatasetRef]:
  if datasets is None:
    datasets = sources.discover_datasets(config.data.data_dir)
  return list(datasets.values()) if isinstance(datasets, Mapping) else list(datasets)


def make_tasks(config, datasets: Optional[Iterable[DatasetRef] | Mapping[str, DatasetRef]] = None,
               **option_overrides) -> dict[str, seqio.Task]:
  """{dataset name: its seqio.Task} (default: every dataset in config.data.data_dir), unregistered.

  The same (dataset, options) gives the same Task object. `option_overrides` replace
  PreprocessingOptions fields (tests, evaluation)."""
  options = PreprocessingOptions.from_config(config, **option_overrides)
  return {ref.name: _task(ref, options) for ref in _as_refs(config, datasets)}


_REGISTERED: set[str] = set()  # task names register_all put in seqio's TaskRegistry


def register_all(config, datasets: Optional[Iterable[DatasetRef] | Mapping[str, DatasetRef]] = None,
                 **option_overrides) -> list[str]:
  """Registers make_tasks' tasks in seqio's (process-wide) TaskRegistry under their dataset names, for
  code that asks seqio for a task by name (`seqio.get_mixture_or_task("cartpole")`); gato-train,
  gato-eval and the pipeline never need it. A name registered here again is replaced when its dataset
  or options changed; one registered by other code is refused. Returns the task names."""
  registered = []
  for name, task in make_tasks(config, datasets, **option_overrides).items():
    if name in seqio.TaskRegistry.names():
      if seqio.TaskRegistry.get(name) is task:
        registered.append(name)
        continue
      if name not in _REGISTERED:
        raise ValueError(f"a seqio Task named {name!r} was registered outside gato_jax.data; "
                         "rename the dataset or remove that task")
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add_provider(name, task)
    _REGISTERED.add(name)
    registered.append(name)
  return registered
