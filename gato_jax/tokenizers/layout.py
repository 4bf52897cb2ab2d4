"""The shared vocabulary: every id range derives from the text vocabulary size, here and nowhere else."""

import dataclasses
import enum


class TokenKind(enum.IntEnum):
  """What a position of the token stream holds; decides its embedding, position code and loss."""
  PAD = 0
  TEXT = 1  # document / caption text: a training target
  IMAGE = 2  # one 16x16 patch, embedded from its pixels
  OBS_TEXT = 3  # text inside an observation (e.g. a BabyAI mission): never a target
  OBS_DISCRETE = 4
  OBS_CONTINUOUS = 5
  SEPARATOR = 6
  ACTION = 7  # a discrete or continuous action token: a training target

  @classmethod
  def target_kinds(cls):
    """Kinds whose tokens are predicted by the loss (text and actions only, as Gato)."""
    return (cls.TEXT, cls.ACTION)

  @classmethod
  def observation_kinds(cls):
    return (cls.IMAGE, cls.OBS_TEXT, cls.OBS_DISCRETE, cls.OBS_CONTINUOUS)


@dataclasses.dataclass(frozen=True)
class VocabLayout:
  """Id ranges of the one vocabulary: text [0, V), continuous, discrete, separator, padding to a multiple.

  With the paper's V = 32000: continuous [32000, 33024), discrete [33024, 34048), separator 34048, and
  `vocab_size` (the model's embedding rows) rounded up to a multiple of `pad_to_multiple` so the vocab
  axis shards evenly. Rows past `separator_id` are never produced by a tokenizer.
  """
  text_vocab_size: int = 32000
  num_continuous_bins: int = 1024
  num_discrete_values: int = 1024
  pad_to_multiple: int = 128

  def __post_init__(self):
    for name in ("text_vocab_size", "num_continuous_bins", "num_discrete_values", "pad_to_multiple"):
      if getattr(self, name) <= 0:
        raise ValueError(f"VocabLayout.{name} must be positive, got {getattr(self, name)}")

  @property
  def continuous_offset(self) -> int:
    return self.text_vocab_size

  @property
  def discrete_offset(self) -> int:
    return self.continuous_offset + self.num_continuous_bins

  @property
  def separator_id(self) -> int:
    return self.discrete_offset + self.num_discrete_values

  @property
  def num_used_ids(self) -> int:
    return self.separator_id + 1

  @property
  def vocab_size(self) -> int:
    """Rows of the embedding table / columns of the logits (padded)."""
    m = self.pad_to_multiple
    return -(-self.num_used_ids // m) * m

  def continuous_range(self) -> tuple[int, int]:
    return (self.continuous_offset, self.discrete_offset)

  def discrete_range(self) -> tuple[int, int]:
    return (self.discrete_offset, self.separator_id)

  @classmethod
  def from_config(cls, vocab_config) -> "VocabLayout":
    """Builds the layout from `config.vocab` (a ConfigDict or mapping with the same field names)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(vocab_config).items() if k in fields})
