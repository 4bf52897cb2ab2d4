"""Text corpus, SentencePiece model and the captions dataset: built tiny, read back, deterministic."""

import os

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

import data_pipelines as dp
from gato_jax.envs import scenes
from gato_jax.data.vocabulary import sentencepiece_file, sentencepiece_model_path
from data_pipelines.text import corpus
from data_pipelines.text.sentencepiece_model import train_sentencepiece


@pytest.fixture(scope="module")
def documents():
  return list(corpus.documents())


def test_corpus_is_english_prose_in_bounded_documents(documents):
  assert len(documents) > 500
  ids = [doc_id for doc_id, _ in documents]
  assert len(set(ids)) == len(ids)
  sizes = np.array([len(text) for _, text in documents])
  assert sizes.min() >= corpus.MIN_DOCUMENT_CHARS and sizes.max() <= corpus.MAX_DOCUMENT_CHARS
  assert sizes.sum() > 1_000_000  # the language reference and the stdlib docstrings
  words = " ".join(text for _, text in documents[:50]).lower().split()
  for common in ("the", "is", "of", "a", "to"):
    assert words.count(common) > 50, common
  validation = sum(corpus.split_of(i) == "validation" for i in ids) / len(ids)
  assert 0.02 < validation < 0.09


def test_chunk_keeps_paragraphs_and_bounds():
  paragraphs = [("word " * 60).strip() for _ in range(30)]
  pieces = corpus.chunk("\n\n".join(paragraphs), max_chars=1000)
  assert all(len(p) <= 1000 for p in pieces)
  assert "\n\n".join(pieces).split("\n\n") == paragraphs
  long_paragraph = "\n".join(["x" * 99] * 20)  # no blank line: cut at line breaks
  pieces = corpus.chunk(long_paragraph, max_chars=450)
  assert [len(p) for p in pieces] == [399] * 5 and "\n".join(pieces) == long_paragraph


def test_text_dataset_builds_a_seeded_sample(tmp_path):
  report = dp.build("text", str(tmp_path), episodes=12, validation_episodes=3, seed=5)
  assert (report.num_train, report.num_validation) == (12, 3)
  texts = [ex["text"].decode() for ex in tfds.as_numpy(
      tfds.builder("text", data_dir=str(tmp_path)).as_dataset(split="train"))]
  assert len(texts) == 12 and all(len(t) >= corpus.MIN_DOCUMENT_CHARS for t in texts)
  train_docs = {text for doc_id, text in corpus.documents() if corpus.split_of(doc_id) == "train"}
  assert set(texts) <= train_docs
  again = dp.build("text", str(tmp_path / "again"), episodes=12, validation_episodes=3, seed=5)
  texts_again = [ex["text"].decode() for ex in tfds.as_numpy(
      tfds.builder("text", data_dir=str(tmp_path / "again")).as_dataset(split="train"))]
  assert sorted(texts) == sorted(texts_again) and again.metadata["splits"] == report.metadata["splits"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, documents):
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_text("\n\n".join(text for _, text in documents[:60]))
  return str(path)


def test_sentencepiece_is_a_seqio_vocabulary_and_deterministic(tmp_path, small_corpus):
  path = train_sentencepiece(str(tmp_path / "a"), 200, files=[small_corpus])
  assert path == sentencepiece_file(str(tmp_path / "a"), 200) and path.endswith("text_200.model")
  again = train_sentencepiece(str(tmp_path / "b"), 200, files=[small_corpus])
  assert open(path, "rb").read() == open(again, "rb").read()
  vocab = seqio.SentencePieceVocabulary(path)
  assert vocab.vocab_size == 200 and (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  sentence = "The assert statement is a convenient way to insert debugging assertions."
  ids = vocab.encode(sentence)
  assert 0 < len(ids) < len(sentence) and max(ids) < 200
  assert vocab.decode(ids) == sentence


def test_sentencepiece_refuses_overwrite_and_names_too_large_vocabularies(tmp_path, small_corpus):
  dp.build_sentencepiece(str(tmp_path), 150, [small_corpus])
  with pytest.raises(dp.DatasetExistsError, match="--overwrite"):
    dp.build_sentencepiece(str(tmp_path), 150, [small_corpus])
  with pytest.raises(ValueError, match=r"vocab_size=32000 .* smaller config.vocab.text_vocab_size"):
    dp.build_sentencepiece(str(tmp_path), 32000, [small_corpus])


def test_the_config_names_its_sentencepiece_model():
  from experiments import tiny_demo
  config = tiny_demo.get_config()
  assert sentencepiece_model_path(config.vocab, config.data.data_dir) == os.path.join(
      os.path.abspath("demo_output/data"), "sentencepiece", "text_512.model")
  config.vocab.sentencepiece_model = "/models/spm_32k.model"
  assert sentencepiece_model_path(config.vocab, config.data.data_dir) == "/models/spm_32k.model"


def test_captions_match_their_ground_truth(tmp_path):
  report = dp.build("captions", str(tmp_path), episodes=8, validation_episodes=2, seed=3)
  assert (report.num_train, report.num_validation) == (8, 2)
  examples = list(tfds.as_numpy(tfds.builder("captions", data_dir=str(tmp_path)).as_dataset(split="train")))
  assert len(examples) == 8
  for ex in examples:
    image = ex["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    groups = [scenes.Group(c.decode(), s.decode(), int(n)) for c, s, n in zip(
        ex["groups"]["color"], ex["groups"]["shape"], ex["groups"]["count"])]
    assert ex["caption"].decode() == scenes.caption(groups)
    for g in groups:  # every named colour is drawn
      assert (image.reshape(-1, 3) == scenes.COLORS[g.color]).all(axis=1).sum() >= 20 * g.count
    drawn = (image.reshape(-1, 3) != scenes.BACKGROUND).any(axis=1)
    named = np.zeros_like(drawn)
    for g in groups:
      named |= (image.reshape(-1, 3) == scenes.COLORS[g.color]).all(axis=1)
    assert not (drawn & ~named).any()  # nothing else is


def test_scenes_are_seeded_and_varied():
  a = [scenes.sample_scene(np.random.default_rng([0, 0, i])) for i in range(50)]
  b = [scenes.sample_scene(np.random.default_rng([0, 0, i])) for i in range(50)]
  assert all(x[1] == y[1] and np.array_equal(x[0], y[0]) for x, y in zip(a, b))
  captions = {x[1] for x in a}
  assert len(captions) > 30
  assert any(" and " in c for c in captions) and any(c.startswith(("two", "three")) for c in captions)


@pytest.mark.slow
def test_text_build_trains_the_demo_vocabulary_covering_missions_and_captions(tmp_path):
  report = dp.build("text", str(tmp_path), episodes=0, text_vocab_size=512)
  assert report.num_train > 500 and report.num_validation > 10
  path = report.metadata["sentencepiece_model"]
  assert path == sentencepiece_file(str(tmp_path), 512)
  vocab = seqio.SentencePieceVocabulary(path)
  assert vocab.vocab_size == 512
  phrases = ["go to the red ball", "pick up the purple box in front of you", "open the yellow door",
             "put the green key next to the grey ball"]
  phrases += [f"{w} {c} {s}" for w in scenes.COUNT_WORDS.values() for c in scenes.COLORS
              for s in ("circles", "squares", "triangles")]
  for phrase in phrases:
    ids = vocab.encode(phrase)
    assert vocab.unk_id not in ids and vocab.decode(ids) == phrase, phrase
