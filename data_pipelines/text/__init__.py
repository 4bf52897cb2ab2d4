"""Text: an English corpus shipped with Python, and the SentencePiece model trained on it."""

from data_pipelines.text.builder import TextBuilder
from data_pipelines.text.corpus import documents, split_of
from data_pipelines.text.sentencepiece_model import train_sentencepiece
