"""`gato-data`: lists the datasets data_pipelines can make and builds them into a data_dir (absl app).

  gato-data list [--data_dir=DIR] [--imported] [--domain=DOMAIN]
  gato-data build --dataset=NAME[,NAME...|all] [--episodes=N] [--validation_episodes=M]
                  [--data_dir=DIR] [--seed=S] [--overwrite] [--config=experiments/tiny_demo.py]
  gato-data build --dataset=sentencepiece --vocab_size=512 --data_dir=DIR
  gato-data build --module_import=my_tasks --dataset=my_task   (your own registered ControlTask)
  gato-data inspect --source=SOURCE [--format=rlds|jat|minari] [--jat_config=CFG] [--mapping=JSON|FILE]
                    [--image_size=H,W] [--name=NAME]      (`inspect SOURCE` works too)
  gato-data import --format=rlds|jat|minari --source=SOURCE --name=NAME [--data_dir=DIR]
                   [--jat_config=CFG] [--mapping=JSON|FILE] [--image_size=H,W] [--minari_root=DIR]

--episodes is the number of train episodes (text: documents, 0 = all; captions: pairs); validation
gets a tenth of it unless --validation_episodes says otherwise. Without --data_dir / --vocab_size the
values come from --config (data.data_dir, vocab.text_vocab_size), else ~/tensorflow_datasets and 512.
A finished dataset is never replaced unless --overwrite is given. `inspect` prints how a foreign
dataset (RLDS / Open X-Embodiment, the JAT layout, Minari) would be mapped to tokens; `import` adds it
to the data_dir (RLDS is linked in place, JAT and Minari are converted): see "Bring your data" in the
README.
"""

import logging as std_logging
import os

from absl import app
from absl import flags
from absl import logging

from gato_jax import cli_flags

SENTENCEPIECE = "sentencepiece"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"
DEFAULT_TEXT_VOCAB_SIZE = 512  # the demo's; paper presets pass --config (32000 needs a larger corpus)

_CONFIG = cli_flags.CONFIG  # data.data_dir and vocab.text_vocab_size are read from it
_DATASET = flags.DEFINE_list("dataset", [], f"Datasets to build (see `gato-data list`), "
                             f"'{SENTENCEPIECE}', or 'all'.")
_EPISODES = flags.DEFINE_integer("episodes", None, "Train episodes / documents / pairs; default: the "
                                 "dataset's own.")
_VALIDATION = flags.DEFINE_integer("validation_episodes", None, "Validation examples; default a tenth "
                                   "of --episodes (at least 1).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where datasets are written (TFDS data_dir).")
_SEED = flags.DEFINE_integer("seed", 0, "Build seed: the same seed gives the same episodes.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild datasets that are already built.")
_SKIP_BUILT = flags.DEFINE_bool("skip_built", False, "Leave datasets that are already built as they are "
                                "(instead of failing), e.g. when `make demo` runs again.")
_RETURN_EPISODES = flags.DEFINE_integer("return_episodes", 20, "Episodes averaged for the expert and "
                                        "random returns in the metadata.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", None, "SentencePiece vocabulary size (text, "
                                   "sentencepiece).")
_MODULE_IMPORT = cli_flags.module_import_flag()
_TEXT_FILES = flags.DEFINE_list("text_files", [], "Your own text corpus (globs) instead of the one "
                                "shipped with Python.")
_FORMAT = flags.DEFINE_enum("format", None, ["rlds", "jat", "minari"], "inspect / import: the source's "
                            "format (inspect detects it when not given).")
_SOURCE = flags.DEFINE_string("source", None, "inspect / import: an RLDS dataset folder (local or gs://), a JAT "
                              "dataset folder, or a Minari dataset id.")
_NAME = flags.DEFINE_string("name", None, "inspect / import: the dataset name in the data_dir (lowercase, _).")
_JAT_CONFIG = flags.DEFINE_string("jat_config", "", "inspect / import: the JAT config (task) folder.")
_MAPPING = flags.DEFINE_string("mapping", None, "inspect / import: overrides of the inferred mapping, "
                               "as JSON or a JSON file (see gato_jax/mapping.py).")
_IMAGE_SIZE = flags.DEFINE_list("image_size", [], "inspect / import: H,W that every image field becomes "
                                "(multiples of 16; the mapping's image policy says how).")
_IMPORTED = flags.DEFINE_bool("imported", False, "list: only the data_dir's datasets no builder here makes "
                              "(imported, linked in place, or built elsewhere).")
_DOMAIN = flags.DEFINE_string("domain", None, "list: only the datasets of this domain (metaworld, babyai, "
                              "atari, rlds, jat, minari, text, ...).")
_MINARI_ROOT = flags.DEFINE_string("minari_root", None, "inspect / import: the Minari datasets root "
                                   "(default: $MINARI_DATASETS_PATH, else ~/.minari/datasets).")


# The importers' libraries log at INFO what asks nothing of the user: Minari its whole EnvSpec on every
# import, Hugging Face `datasets` the frameworks it found.
IMPORT_LIBRARIES = ("minari", "datasets", "gymnasium")


def _keep_import_record(record) -> bool:
  return record.levelno >= std_logging.WARNING or not any(
      f"{os.sep}{name}{os.sep}" in record.pathname for name in IMPORT_LIBRARIES)


def _data_dir() -> str:
  if _DATA_DIR.value:
    return os.path.expanduser(_DATA_DIR.value)
  if _CONFIG.value is not None:
    return os.path.expanduser(_CONFIG.value.data.data_dir)
  return os.path.expanduser(DEFAULT_DATA_DIR)


def _vocab_size() -> int:
  if _VOCAB_SIZE.value:
    return _VOCAB_SIZE.value
  if _CONFIG.value is not None:
    return int(_CONFIG.value.vocab.text_vocab_size)
  return DEFAULT_TEXT_VOCAB_SIZE


def list_datasets(data_dir: str, imported: bool = False, domain: str = "") -> str:
  """A table of every dataset: name, kind, default size, built or not in data_dir, description; then
  the data_dir's datasets no builder here makes (imported ones, or built by another installation).
  `imported`: only the latter; `domain`: only the datasets of that domain (metaworld, rlds, ...)."""
  import data_pipelines
  from gato_jax.data import sources
  from gato_jax.data.vocabulary import sentencepiece_file
  from gato_jax.envs import registry
  import tensorflow as tf
  rows = [("name", "kind", "default", "in " + data_dir, "description")]
  for name, entry in ([] if imported else sorted(data_pipelines.DATASETS.items())):
    if domain and (registry.domain_of(entry.task) if entry.task is not None else entry.kind) != domain:
      continue
    builder = data_pipelines.make_builder(name, data_dir)
    if data_pipelines.is_built(builder):
      splits = builder.info.splits
      status = f"built ({splits['train'].num_examples}+{splits['validation'].num_examples})"
    else:
      status = "-"
    rows.append((name, entry.kind, str(entry.default_episodes or "all"), status, entry.description))
  for name, ref in sorted(sources.discover_datasets(data_dir).items()):
    if name not in data_pipelines.DATASETS and (not domain or (ref.domain or ref.kind) == domain):
      origin = "linked in place" if ref.link is not None else "found"
      rows.append((name, ref.kind, "-", origin, f"{ref.domain or ref.kind} dataset in the data_dir"))
  sp = sentencepiece_file(data_dir, _vocab_size())
  if not imported and not domain:
    rows.append((SENTENCEPIECE, "vocab", str(_vocab_size()), "built" if tf.io.gfile.exists(sp) else "-",
                 f"SentencePiece model trained on the text corpus -> {sp}"))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def build_all(names, data_dir: str) -> int:
  """Builds each dataset; returns the number that failed (each failure is logged, the rest go on)."""
  import data_pipelines
  failed = 0
  for name in names:
    try:
      if name == SENTENCEPIECE:
        path = data_pipelines.build_sentencepiece(data_dir, _vocab_size(), _TEXT_FILES.value or None,
                                                  overwrite=_OVERWRITE.value)
        print(f"{SENTENCEPIECE}: {path}")
        continue
      report = data_pipelines.build(
          name, data_dir, episodes=_EPISODES.value, validation_episodes=_VALIDATION.value,
          seed=_SEED.value, overwrite=_OVERWRITE.value, return_episodes=_RETURN_EPISODES.value,
          text_vocab_size=_vocab_size(), text_files=_TEXT_FILES.value or None)
      print(report.summary())
    except data_pipelines.DatasetExistsError as e:
      if _SKIP_BUILT.value:
        print(f"{name}: already built, kept ({e})")
        continue
      logging.error("%s", e)
      print(f"{name}: FAILED: {e}")
      failed += 1
    except (ValueError, RuntimeError) as e:
      logging.error("%s", e)
      print(f"{name}: FAILED: {e}")
      failed += 1
  return failed


def foreign(command: list[str], data_dir: str) -> int:
  """`inspect --source=SOURCE` (or `inspect SOURCE`) / `import`: the importers of
  data_pipelines/importers, errors in one line."""
  import tensorflow as tf
  tf.get_logger().setLevel("ERROR")  # TFDS's reader trips TF deprecation warnings on every RLDS read
  os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when `datasets` is imported
  from data_pipelines import importers
  image_size = tuple(int(v) for v in _IMAGE_SIZE.value) if _IMAGE_SIZE.value else None
  try:
    if command[0] == "inspect":
      source = command[1] if len(command) == 2 else _SOURCE.value
      if not source:
        cli_flags.fail("inspect needs --source=SOURCE (an RLDS folder, a JAT folder or a Minari id)")
      overrides = {**importers.load_overrides(_MAPPING.value),
                   **({"image_size": list(image_size)} if image_size else {})}
      print(importers.inspect(source, format=_FORMAT.value, jat_config=_JAT_CONFIG.value,
                              mapping=overrides, minari_root=_MINARI_ROOT.value, name=_NAME.value or ""))
      return 0
    missing = [f"--{f}" for f, v in (("format", _FORMAT.value), ("source", _SOURCE.value),
                                     ("name", _NAME.value)) if not v]
    if missing:
      cli_flags.fail(f"import needs {', '.join(missing)}")
    print(importers.import_dataset(_FORMAT.value, _SOURCE.value, _NAME.value, data_dir,
                                   jat_config=_JAT_CONFIG.value, mapping=_MAPPING.value,
                                   image_size=image_size, minari_root=_MINARI_ROOT.value))
  except (ValueError, FileNotFoundError, ImportError) as e:
    cli_flags.fail(f"{command[0]}: {e}", status=1)
  return 0


def main(argv):
  command = argv[1:]
  if command not in (["list"], ["build"], ["import"], ["inspect"]) and not (
      len(command) == 2 and command[0] == "inspect"):  # `inspect SOURCE`: the older spelling, kept
    raise app.UsageError(f"expected one command: `list`, `build`, `inspect --source=SOURCE` or `import`; "
                         f"got {command}")
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()  # the builds log their own progress (episodes/s) through absl
  cli_flags.quiet_library_logs()  # and TFDS's per-shard INFO lines would drown it
  logging.get_absl_handler().addFilter(_keep_import_record)
  cli_flags.import_modules(_MODULE_IMPORT.value)
  data_dir = _data_dir()
  if command == ["list"]:
    print(list_datasets(data_dir, imported=_IMPORTED.value, domain=_DOMAIN.value or ""))
    return 0
  if command[0] in ("inspect", "import"):
    return foreign(command, data_dir)
  import data_pipelines
  names = list(_DATASET.value)
  if names == ["all"]:
    names = [SENTENCEPIECE] + sorted(data_pipelines.DATASETS)
  if not names:
    raise app.UsageError("build needs --dataset=NAME[,NAME...] (see `gato-data list`) or --dataset=all")
  unknown = [n for n in names if n != SENTENCEPIECE and n not in data_pipelines.DATASETS]
  if unknown:
    raise app.UsageError(f"unknown datasets {unknown}; known: {SENTENCEPIECE}, "
                         f"{', '.join(sorted(data_pipelines.DATASETS))}")
  failed = build_all(names, data_dir)
  return 1 if failed else 0


def run():
  cli_flags.run(main, "gato-data")


if __name__ == "__main__":
  run()
