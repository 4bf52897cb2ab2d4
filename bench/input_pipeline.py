"""Input-pipeline throughput: tokens per second per CPU core, TFDS files -> feature-converted numpy batches.

    python bench/input_pipeline.py --config=experiments/tiny_demo.py \
        --data_dir=demo_output/bench_data --build_missing

For each mixture (control_demo, gato_local) and sequence length, one process's pipeline
(`gato_jax.data.pipeline.make_dataset`, process 0 of 1, the config's batch size) is built and read:
construction time, first-batch latency (fills the shuffle buffers), then steady-state throughput over
`--batches` batches after `--warmup`. "Per core" divides by the process's CPU time (all threads), so
the number holds on a machine shared with other jobs; wall-clock rates are reported too. Per task:
its share of rows, non-PAD tokens and loss (text / action) tokens per sequence.
Writes bench/results/input_pipeline.json and .md.
"""

import json
import os
import platform
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io  # noqa: E402  (the repository root is on sys.path now)

from gato_jax.data import mixtures, pipeline, sources  # noqa: E402
from gato_jax.tokenizers import TokenKind  # noqa: E402

config_flags.DEFINE_config_file("config", "experiments/tiny_demo.py", "experiment config")
flags.DEFINE_string("data_dir", None, "overrides config.data.data_dir")
flags.DEFINE_list("mixtures", ["control_demo", "gato_local"], "mixtures to read")
flags.DEFINE_list("sequence_lengths", [], "sequence lengths L (default: config.data.sequence_length)")
flags.DEFINE_integer("batches", 150, "batches timed per run")
flags.DEFINE_integer("warmup", 20, "batches read before timing")
flags.DEFINE_bool("build_missing", False, "build the mixtures' missing datasets with data_pipelines")
flags.DEFINE_integer("build_episodes", 30, "train episodes per control dataset built (captions x10)")
flags.DEFINE_bool("imported", False, "also read one mixture per imported format (RLDS linked in place, "
                  "JAT, Minari), importing tests/testlib/foreign_fixtures.py's datasets first")
flags.DEFINE_string("out_dir", "bench/results", "where input_pipeline.{json,md} go")
FLAGS = flags.FLAGS


def ensure_datasets(names, data_dir: str, episodes: int, vocab_size: int) -> dict:
  """Builds the missing datasets (small) and the SentencePiece model; returns {name: build seconds}."""
  import data_pipelines
  built = {}
  for name in names:
    if sources.dataset_exists(name, data_dir):
      continue
    kind = data_pipelines.get(name).kind
    n = {"control": episodes, "text": 0, "captions": 10 * episodes}[kind]
    report = data_pipelines.build(name, data_dir, episodes=n, seed=0,
                                  text_vocab_size=vocab_size if kind == "text" else 0)
    built[name] = round(report.seconds, 1)
  spm = os.path.join(data_dir, "sentencepiece", f"text_{vocab_size}.model")
  if not os.path.exists(spm):
    data_pipelines.build_sentencepiece(data_dir, vocab_size)
  return built


def measure(config, warmup: int, batches: int, in_memory_cache: bool) -> dict:
  mixture_name, length = config.data.mixture, int(config.data.sequence_length)
  start = time.perf_counter()
  ds = pipeline.make_dataset(config, "train", 0, 1, seed=0, in_memory_cache=in_memory_cache)
  construct = time.perf_counter() - start
  it = ds.as_numpy_iterator()
  start = time.perf_counter()
  next(it)
  first = time.perf_counter() - start
  for _ in range(warmup):
    next(it)
  wall0, cpu0 = time.perf_counter(), time.process_time()
  rows = []
  for _ in range(batches):
    b = next(it)
    rows.append({"task_index": b["task_index"], "real": (b["kinds"] != TokenKind.PAD).sum(1),
                 "loss": b["loss_mask"].sum(1)})
  wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
  task_index = np.concatenate([r["task_index"] for r in rows])
  real = np.concatenate([r["real"] for r in rows])
  loss = np.concatenate([r["loss"] for r in rows])
  tokens = task_index.size * length
  names = mixtures.task_names(pipeline.make_mixture(config))
  per_task = {}
  for i, name in enumerate(names):
    sel = task_index == i
    if sel.any():
      per_task[name] = {"row_share": float(sel.mean()), "real_tokens_per_sequence": float(real[sel].mean()),
                        "loss_tokens_per_sequence": float(loss[sel].mean())}
  return {
      "mixture": mixture_name, "sequence_length": length, "batch_size": int(config.batch_size),
      "episodes_from": "memory" if in_memory_cache else "files",
      "tasks": len(names), "construct_s": construct, "first_batch_s": first, "timed_batches": batches,
      "wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall,
      "tokens_per_s": tokens / wall, "tokens_per_core_s": tokens / max(cpu, 1e-9),
      "real_token_fraction": float(real.sum() / tokens), "loss_token_fraction": float(loss.sum() / tokens),
      "per_task": per_task,
  }


def markdown(results: list, machine: dict) -> str:
  lines = [
      "# Input pipeline throughput (TFDS files -> feature-converted numpy batches)", "",
      f"Machine: {machine['cpus']} CPU cores, load average {machine['load_average']} at the start "
      f"(shared with other jobs), TensorFlow {machine['tensorflow']}. One process, process 0 of 1. "
      "Per core = tokens / the process's CPU seconds (all threads); tokens count every position of "
      "the batches (L per sequence), `real` excludes padding, `loss` counts text / action targets.", "",
      "`episodes from`: `memory` is seqio's in-memory cache of decoded episodes (used for shards of "
      "< 10k examples, as the demo's); `files` decodes every episode from its TFDS file each time "
      "(what large datasets do).", "",
      "| mixture | L | batch | tasks | episodes from | build s | first batch s | tokens/s (wall) "
      "| tokens/s per core | cores busy | real | loss |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results:
    lines.append(f"| {r['mixture']} | {r['sequence_length']} | {r['batch_size']} | {r['tasks']} | "
                 f"{r['episodes_from']} | "
                 f"{r['construct_s']:.1f} | {r['first_batch_s']:.1f} | {r['tokens_per_s']:,.0f} | "
                 f"{r['tokens_per_core_s']:,.0f} | {r['cores_busy']:.2f} | {r['real_token_fraction']:.2f} | "
                 f"{r['loss_token_fraction']:.3f} |")
  for r in (r for r in results if r["episodes_from"] == "memory"):  # the same sequences either way
    lines += ["", f"## {r['mixture']}, L = {r['sequence_length']}: per task", "",
              "| task | share of rows | real tokens / sequence | loss tokens / sequence |",
              "| --- | --- | --- | --- |"]
    for name, t in r["per_task"].items():
      lines.append(f"| {name} | {t['row_share']:.3f} | {t['real_tokens_per_sequence']:.1f} | "
                   f"{t['loss_tokens_per_sequence']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.data_dir:
    config.data.data_dir = FLAGS.data_dir
  data_dir = sources.expand_data_dir(config.data.data_dir)
  lengths = [int(x) for x in FLAGS.sequence_lengths] or [int(config.data.sequence_length)]
  machine = {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
             "python": platform.python_version()}
  import tensorflow as tf
  machine["tensorflow"] = tf.__version__
  built = {}
  if FLAGS.build_missing:
    import data_pipelines  # pylint: disable=g-import-not-at-top  (what can be built, by name)
    refs = {n: sources.DatasetRef(n, e.kind) for n, e in data_pipelines.DATASETS.items()}
    wanted = set()
    for name in FLAGS.mixtures:
      wanted |= set(mixtures.default_mixture_rates(refs.values()).get(name, mixtures.parse_mixture(name)))
    built = ensure_datasets(sorted(wanted), data_dir, FLAGS.build_episodes,
                            int(config.vocab.text_vocab_size))
  mixtures_read = list(FLAGS.mixtures)
  if FLAGS.imported:
    # The fixtures are test code (tests/testlib), written by each format's own library.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from testlib import foreign_fixtures as fixtures  # pylint: disable=g-import-not-at-top
    mixtures_read += fixtures.import_bench_datasets(data_dir, FLAGS.build_episodes)
  results = []
  for mixture in mixtures_read:
    for length in lengths:
      for in_memory_cache in (True, False):
        c = config.copy_and_resolve_references()
        c.data.mixture, c.data.sequence_length = mixture, length
        logging.info("measuring %s at L=%d (in-memory cache %s)", mixture, length, in_memory_cache)
        results.append(measure(c, FLAGS.warmup, FLAGS.batches, in_memory_cache))
      logging.info("%s", json.dumps({k: v for k, v in results[-1].items() if k != "per_task"}))
  results_io.write_results(FLAGS.out_dir, "input_pipeline",
                           {"machine": machine, "data_dir": data_dir, "built": built, "results": results},
                           markdown(results, machine))


if __name__ == "__main__":
  app.run(main)
