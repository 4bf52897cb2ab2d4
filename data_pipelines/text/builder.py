"""The `text` dataset: corpus documents as {"text": Text}, split train/validation by a hash of their id."""

from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from gato_jax.envs.control import Progress
from data_pipelines.local_builder import LocalBuilder
from data_pipelines.text import corpus
from data_pipelines.text.sentencepiece_model import train_sentencepiece


class TextBuilder(LocalBuilder):
  """English documents; num_train=0 keeps all of them, N > 0 a seeded sample of N (and of validation).

  Building it also trains the SentencePiece model of `sentencepiece_vocab_size` (0: do not) on the
  whole corpus, so a text build leaves the vocabulary the SeqIO tasks need next to the data.
  """

  KIND = "text"
  name = "text"
  DESCRIPTION = ("English text that ships with Python: the language reference (pydoc topics) and the "
                 "standard library's docstrings, cut into documents of <= 4000 characters.")
  DEFAULT_EPISODES = 0
  ZERO_MEANS_ALL = True

  def __init__(self, *, files: Optional[Sequence[str]] = None, sentencepiece_vocab_size: int = 0,
               overwrite_sentencepiece: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.files = list(files) if files else None
    self.sentencepiece_vocab_size = int(sentencepiece_vocab_size)
    self.overwrite_sentencepiece = overwrite_sentencepiece

  def _info(self) -> tfds.core.DatasetInfo:
    return self._build_info(tfds.features.FeaturesDict({"text": tfds.features.Text()}), self.DESCRIPTION)

  def _split_generators(self, dl_manager):
    del dl_manager
    docs = {"train": [], "validation": []}
    for doc_id, text in corpus.documents(self.files):
      docs[corpus.split_of(doc_id)].append((doc_id, text))
    if self.num_train:  # a seeded sample, the same for a seed whatever the corpus order
      rng = np.random.default_rng(self.seed)
      for split, limit in (("train", self.num_train), ("validation", self.num_validation)):
        keep = np.sort(rng.permutation(len(docs[split]))[:limit])
        docs[split] = [docs[split][i] for i in keep]
    self.build_metadata.update({
        "num_train": len(docs["train"]), "num_validation": len(docs["validation"]),
        "source": "files" if self.files else "pydoc_topics + stdlib_docstrings",
        "files": self.files or [],
        "splits": {s: {"documents": len(d), "characters": sum(len(t) for _, t in d)}
                   for s, d in docs.items()}})
    return {split: self._generate_examples(split, d) for split, d in docs.items()}

  def _generate_examples(self, split, docs):
    progress = Progress(f"text/{split}", len(docs), unit="documents")
    for i, (doc_id, text) in enumerate(docs):
      yield doc_id, {"text": text}
      progress.update(i + 1)

  def _finalize(self) -> None:
    if self.sentencepiece_vocab_size:
      path = train_sentencepiece(str(self.data_dir_root), self.sentencepiece_vocab_size, self.files,
                                 overwrite=self.overwrite_sentencepiece)
      self.build_metadata["sentencepiece_model"] = path
