"""Building a registered dataset into a data_dir: refuses to overwrite, times the build, reports it."""

import dataclasses
import os
import time
from typing import Optional, Sequence

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import local_builder, registry
from data_pipelines.text.sentencepiece_model import train_sentencepiece
from gato_jax.data.vocabulary import sentencepiece_file


class DatasetExistsError(FileExistsError):
  """The dataset is already built in that data_dir (rebuild with overwrite=True / --overwrite)."""


@dataclasses.dataclass
class BuildReport:
  name: str
  path: str
  seconds: float
  cpu_seconds: float  # this process's CPU time: what the build costs on a machine shared with others
  num_train: int
  num_validation: int
  metadata: dict

  @property
  def examples_per_second(self) -> float:
    return (self.num_train + self.num_validation) / max(self.seconds, 1e-9)

  def summary(self) -> str:
    line = (f"{self.name}: {self.num_train} train + {self.num_validation} validation examples in "
            f"{self.seconds:.1f} s ({self.examples_per_second:.1f}/s, {self.cpu_seconds:.1f} s of CPU) "
            f"-> {self.path}")
    m = self.metadata
    if "expert_return" in m:
      line += (f"; expert return {m['expert_return']:.3f} (n={m['expert_episodes']}), random return "
               f"{m['random_return']:.3f} (n={m['random_episodes']}), kept {m['episodes_kept']}, "
               f"rejected {m['episodes_rejected']}")
    return line


def make_builder(name: str, data_dir: str, **kwargs):
  """The TFDS builder of a registered dataset, with build arguments (see LocalBuilder)."""
  return registry.get(name).builder(data_dir=os.path.expanduser(data_dir), **kwargs)


def is_built(builder) -> bool:
  """A finished dataset: TFDS writes dataset_info.json last, after renaming the incomplete directory."""
  return (builder.data_path / "dataset_info.json").exists()


def remove_interrupted_builds(builder) -> list[str]:
  """Deletes the `incomplete.*` directories a killed build of this dataset left beside its version
  directory (TFDS renames one into place only when a build finishes; a SIGKILL leaves it forever)."""
  parent = builder.data_path.parent
  stale = [p for p in (parent.iterdir() if parent.exists() else []) if p.name.startswith("incomplete.")]
  for path in stale:
    logging.warning("removing %s, left by an interrupted build", path)
    tf.io.gfile.rmtree(str(path))
  return [str(p) for p in stale]


def build(name: str, data_dir: str, episodes: Optional[int] = None,
          validation_episodes: Optional[int] = None, seed: int = 0, overwrite: bool = False,
          return_episodes: int = 20, text_vocab_size: int = 0,
          text_files: Optional[Sequence[str]] = None) -> BuildReport:
  """Builds dataset `name` under `data_dir` (train episodes / documents / pairs = `episodes`, default
  the dataset's own). `text_vocab_size` > 0 also trains the SentencePiece model in a `text` build."""
  entry = registry.get(name)
  kwargs = {"num_train": entry.default_episodes if episodes is None else episodes,
            "num_validation": validation_episodes, "seed": seed, "return_episodes": return_episodes}
  if entry.kind == "text":
    kwargs.update(files=text_files, sentencepiece_vocab_size=text_vocab_size,
                  overwrite_sentencepiece=overwrite)
  builder = make_builder(name, data_dir, **kwargs)
  if is_built(builder):
    if not overwrite:
      meta = builder.info.metadata or {}
      raise DatasetExistsError(
          f"dataset {name!r} is already built at {builder.data_dir} (train={meta.get('num_train')}, "
          f"seed={meta.get('build_seed')}); pass --overwrite (overwrite=True) to rebuild it")
    logging.info("overwriting %s", builder.data_dir)
    tf.io.gfile.rmtree(builder.data_dir)
    builder = make_builder(name, data_dir, **kwargs)
  remove_interrupted_builds(builder)
  logging.info("building %s into %s", name, builder.data_dir)
  start, cpu_start = time.perf_counter(), time.process_time()
  local_builder.prepare(builder, download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False))
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
  splits = builder.info.splits
  report = BuildReport(name, str(builder.data_dir), seconds, cpu_seconds, splits["train"].num_examples,
                       splits["validation"].num_examples, dict(builder.info.metadata))
  logging.info("%s", report.summary())
  return report


def build_sentencepiece(data_dir: str, vocab_size: int, text_files: Optional[Sequence[str]] = None,
                        overwrite: bool = False) -> str:
  """Trains the SentencePiece model (refusing to replace an existing one unless `overwrite`)."""
  path = sentencepiece_file(data_dir, vocab_size)
  if tf.io.gfile.exists(path) and not overwrite:
    raise DatasetExistsError(f"SentencePiece model {path} already exists; pass --overwrite to retrain it")
  start = time.perf_counter()
  path = train_sentencepiece(data_dir, vocab_size, text_files, overwrite=True)
  logging.info("sentencepiece: vocab %d trained in %.1f s -> %s", vocab_size, time.perf_counter() - start,
               path)
  return path
