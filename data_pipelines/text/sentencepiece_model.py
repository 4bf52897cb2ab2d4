"""A SentencePiece model trained locally on the text corpus, usable as seqio.SentencePieceVocabulary.

Saved at `{data_dir}/sentencepiece/text_{V}.model` (V = config.vocab.text_vocab_size); the config's
`vocab.sentencepiece_model` overrides the path. Unigram model with T5's special ids (pad 0, eos 1,
unk 2, no bos), trained on the corpus's train documents only, one line per sentence, single-threaded
on the whole corpus (no sentence sampling) so the same corpus and V give the same bytes.
"""

import io
import os
from typing import Optional, Sequence

from absl import logging

from gato_jax.envs.control import Progress
from data_pipelines.text import corpus
from gato_jax.data.vocabulary import sentencepiece_file


def training_sentences(files: Optional[Sequence[str]] = None) -> list[str]:
  return [line for doc_id, text in corpus.documents(files) if corpus.split_of(doc_id) == "train"
          for line in text.split("\n") if line.strip()]


def train_sentencepiece(data_dir: str, vocab_size: int, files: Optional[Sequence[str]] = None,
                        overwrite: bool = False) -> str:
  """Trains (unless present) and writes the model; returns its path."""
  import sentencepiece as spm
  import tensorflow as tf
  path = sentencepiece_file(data_dir, vocab_size)
  if tf.io.gfile.exists(path) and not overwrite:
    logging.info("SentencePiece model %s exists; reusing it (pass overwrite to retrain)", path)
    return path
  sentences = training_sentences(files)
  progress = Progress(f"sentencepiece text_{vocab_size}", 1, unit="models")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=int(vocab_size),
        model_type="unigram", character_coverage=0.9995, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        num_threads=1, input_sentence_size=0, minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f"SentencePiece with vocab_size={vocab_size} on the text corpus "
                     f"({len(sentences)} lines) failed: {e}. Use a smaller config.vocab.text_vocab_size "
                     "or a larger corpus (gato-data build --text_files=...).") from None
  tf.io.gfile.makedirs(os.path.dirname(path))
  tmp = path + ".incomplete"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(model.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)
  progress.update(1, f"{len(sentences)} lines -> {path}")
  return path
