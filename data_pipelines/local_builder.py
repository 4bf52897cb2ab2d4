"""The TFDS builder base every local dataset shares: build-time arguments and metadata written last.

TFDS constructs builders with only `data_dir` when it reads a dataset back, so the build arguments
(episode counts, seed) are optional keyword arguments; they only matter to `download_and_prepare`.
Metadata measured while generating (returns, kept/rejected counts) is put into `info.metadata` after
every split has been written and before TFDS writes `dataset_info.json` and `metadata.json`.
"""

import inspect
import platform
from typing import Any, Optional

from etils import epath
import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset made on this machine (subclasses: `_info`, `_split_generators`, `_generate_examples`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Made locally by gato-data (no download)."}
  KIND = ""  # control | text | captions: recorded in the metadata, read back by gato_jax.data.sources
  DEFAULT_EPISODES = 100  # train examples when the caller gives none
  ZERO_MEANS_ALL = False  # num_train=0 takes every available example (finite corpora)

  def __init__(self, *, num_train: Optional[int] = None, num_validation: Optional[int] = None,
               seed: int = 0, return_episodes: int = 20, **kwargs):
    super().__init__(**kwargs)
    self.num_train = int(num_train if num_train is not None else self.DEFAULT_EPISODES)
    self.num_validation = int(num_validation if num_validation is not None
                              else default_validation(self.num_train))
    if self.num_train < (0 if self.ZERO_MEANS_ALL else 1) or self.num_validation < 1:
      raise ValueError(f"dataset {self.name!r}: need at least one train and one validation example, "
                       f"got train={self.num_train}, validation={self.num_validation}")
    self.seed = int(seed)
    self.return_episodes = int(return_episodes)
    if self.return_episodes < 1:
      raise ValueError(f"dataset {self.name!r}: return_episodes must be >= 1, got {return_episodes}")
    self.build_metadata: dict[str, Any] = {}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup goes through `importlib_resources`, a backport it only installs on Python < 3.9,
    # and fails without it; the file that defines the class is what it would find.
    return epath.Path(inspect.getfile(cls))

  def _build_info(self, features, description: str) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=features, description=description,
                                          metadata=tfds.core.MetadataDict())

  def _finalize(self) -> None:
    """Called once every split is written: fill `self.build_metadata` (measured returns, counts)."""

  def domain(self) -> str:
    """The family the dataset reports under in mixtures and evaluation (default: its kind)."""
    return self.KIND

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager, download_config)
    self._finalize()
    meta = {"kind": self.KIND, "domain": self.domain(), "build_seed": self.seed, "num_train": self.num_train, "num_validation": self.num_validation,
            "python_version": platform.python_version()}
    meta.update(self.build_metadata)
    self.info.metadata.update(to_json(meta))


def prepare(builder, **kwargs) -> None:
  """builder.download_and_prepare with a temporary download folder: nothing here downloads, and TFDS
  would otherwise leave an empty `downloads/extracted/` in the data_dir. TFDS's "Downloading and
  preparing" prints are dropped too (the builds log their own progress)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="gato_downloads_") as downloads, \
      contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(download_dir=downloads, **kwargs)


def default_validation(num_train: int) -> int:
  """Validation examples when not given: a tenth of train, at least one."""
  return max(1, num_train // 10)


def to_json(value):
  """NumPy scalars / arrays / tuples -> plain JSON values (metadata.json is written with json.dump)."""
  if isinstance(value, dict):
    return {str(k): to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json(v) for v in value]
  if hasattr(value, "tolist"):
    return value.tolist()
  return value
