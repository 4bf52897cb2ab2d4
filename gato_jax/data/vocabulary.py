"""The `tokens` feature's seqio.Vocabulary: Gato's whole id space, with SentencePiece for its text range.

A Gato token stream mixes text ids [0, V) with continuous, discrete and separator ids. seqio wants one
Vocabulary per feature (mixtures compare them, evaluators decode with them), so this class spans the
whole layout (`vocab_size` = the model's embedding rows) and delegates text to the
`seqio.SentencePieceVocabulary`: `encode` gives SentencePiece ids, `decode` keeps the text ids of a
stream and drops the others (so a generated caption decodes to its text). The SentencePiece model is
only opened when text is actually encoded or decoded: control-only mixtures run without one.
"""

import os

import seqio
import tensorflow as tf

from gato_jax.tokenizers import TextTokenizer, VocabLayout


def sentencepiece_file(data_dir: str, vocab_size: int) -> str:
  """Where a data_dir's locally trained SentencePiece model of `vocab_size` pieces lives."""
  return os.path.join(os.path.abspath(os.path.expanduser(os.fspath(data_dir))), "sentencepiece",
                      f"text_{int(vocab_size)}.model")


def sentencepiece_model_path(vocab_config, data_dir: str) -> str:
  """The model a config uses: `vocab.sentencepiece_model`, else the data_dir's trained one."""
  override = vocab_config.get("sentencepiece_model", "") if hasattr(vocab_config, "get") else ""
  if override:
    return os.path.expanduser(override)
  return sentencepiece_file(data_dir, vocab_config["text_vocab_size"])


class GatoVocabulary(seqio.Vocabulary):

  def __init__(self, layout: VocabLayout, sentencepiece_model: str | None):
    super().__init__(extra_ids=0)
    self.layout = layout
    self.sentencepiece_model = os.fspath(sentencepiece_model) if sentencepiece_model else None
    self._text_tokenizer = None

  @property
  def text_tokenizer(self) -> TextTokenizer:
    """The SentencePiece tokenizer (opened on first use); a clear error when there is none."""
    if self._text_tokenizer is None:
      path = self.sentencepiece_model
      if not path or not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"no SentencePiece model at {path!r}: text (documents, captions, text observations such as "
            "BabyAI missions) needs one. Build it with `gato-data build --dataset=sentencepiece "
            "--data_dir=DIR` or point config.vocab.sentencepiece_model at an existing .model file")
      tokenizer = TextTokenizer(path)
      if tokenizer.vocab_size > self.layout.text_vocab_size:
        raise ValueError(f"SentencePiece model {path} has {tokenizer.vocab_size} pieces but "
                         f"config.vocab.text_vocab_size is {self.layout.text_vocab_size}: its ids would "
                         "collide with the continuous range; retrain it or raise text_vocab_size")
      self._text_tokenizer = tokenizer
    return self._text_tokenizer

  @property
  def text(self) -> seqio.SentencePieceVocabulary:
    return self.text_tokenizer.vocab

  @property
  def eos_id(self):
    return self.text.eos_id

  @property
  def unk_id(self):
    return self.text.unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self.layout.vocab_size

  def _encode(self, s):
    return self.text.encode(s)

  def _decode(self, ids):
    v = self.layout.text_vocab_size
    return self.text.decode([int(i) for i in ids if 0 < int(i) < v])

  def _encode_tf(self, s):
    return self.text.encode_tf(s)

  def _decode_tf(self, ids):
    v = self.layout.text_vocab_size
    text_only = tf.where((ids > 0) & (ids < v), ids, tf.zeros_like(ids))
    return self.text.decode_tf(text_only)

  def __eq__(self, other):
    return (isinstance(other, GatoVocabulary) and self.layout == other.layout
            and self.sentencepiece_model == other.sentencepiece_model)

  def __hash__(self):
    return hash((self.layout, self.sentencepiece_model))

  def __repr__(self):
    return (f"GatoVocabulary(vocab_size={self.layout.vocab_size}, text_vocab_size="
            f"{self.layout.text_vocab_size}, sentencepiece_model={self.sentencepiece_model!r})")
