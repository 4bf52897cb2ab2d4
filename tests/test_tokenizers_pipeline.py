"""The input pipeline's tokens equal the acting agent's, token for token, on datasets written as
`gato-data build` writes them: every control episode through the SeqIO preprocessor (TF episode
assembly) against the NumPy timestep tokenizer step by step, and captioned images against the NumPy
image stream the caption generator feeds the model."""

import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from gato_jax import tokenizers as tok  # noqa: E402  (after the importorskip)
from gato_jax.data import preprocessors, readers, sources  # noqa: E402
from gato_jax.tokenizers import TokenKind, stream  # noqa: E402
from testlib import data_testing as testing  # noqa: E402

LAYOUT = tok.VocabLayout(text_vocab_size=512)
LENGTH = 160  # L + 1 of the caption sequences: room for two 32x32 images (4 patches) and their captions


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  testing.build_tiny_data_dir(data_dir, num_episodes=(4, 2))
  text = tok.TextTokenizer(str(data_dir / "sentencepiece" / "text_512.model"))
  return str(data_dir), types.SimpleNamespace(text_tokenizer=text)


@pytest.mark.parametrize("name", ["tiny_grid", "tiny_pole", "tiny_reach"])
def test_pipeline_episodes_tokenize_as_the_agent_does(built, name):
  data_dir, vocabulary = built
  spec = sources.read_task_spec(name, data_dir)
  episodes = readers.EpisodeSource(name, data_dir, spec).get_dataset("train", shuffle=False)
  tokenized = preprocessors.tokenize_episodes(episodes, spec=spec, layout=LAYOUT, vocabulary=vocabulary,
                                              max_obs_positions=6, num_patch_positions=128)
  has_images = any(f.modality == "image" for _, f in spec.observation_fields())
  count = 0
  for episode, got in zip(episodes.as_numpy_iterator(), tokenized.as_numpy_iterator()):
    steps = episode["steps"]
    expected = [tok.tokenize_timestep(tf.nest.map_structure(lambda v, t=t: v[t], steps["observation"]),
                                      steps["action"][t], spec, LAYOUT, vocabulary.text_tokenizer,
                                      max_obs_positions=6)
                for t in range(len(steps["action"]))]
    got = got["stream"]
    keys = set(stream.STREAM_FIELDS) - (set() if has_images else set(stream.IMAGE_FIELDS))
    assert set(got) == keys | {"timesteps"}
    for key in keys:
      want = stream.concat(expected)[key]
      assert got[key].dtype == want.dtype, key
      np.testing.assert_array_equal(got[key], want, err_msg=f"{name}: {key}")
    np.testing.assert_array_equal(got["timesteps"], np.repeat(np.arange(len(expected)),
                                                               [len(s["tokens"]) for s in expected]))
    count += 1
  assert count == 4


def test_caption_sequences_hold_the_image_stream_of_caption_generation(built):
  data_dir, vocabulary = built
  pairs = readers.TfdsSource("captions", data_dir).get_dataset("train", shuffle=False)
  sequences = preprocessors.caption_sequences(pairs, sequence_length={"tokens": LENGTH}, layout=LAYOUT,
                                              vocabulary=vocabulary, num_patch_positions=128,
                                              max_obs_positions=3, pairs=2)
  text = vocabulary.text_tokenizer
  for (first, second), got in zip(zip(*[pairs.take(4).as_numpy_iterator()] * 2), sequences.take(2).as_numpy_iterator()):
    parts = []
    for ex in (first, second):
      caption = np.append(text.encode(ex["caption"]), text.vocab.eos_id)
      parts += [stream.of_image(ex["image"], 128, 3), stream.of_ids(caption, TokenKind.TEXT)]
    want = stream.concat(parts)
    n = len(want["tokens"])
    assert n < LENGTH
    for key in ("tokens", "kinds", "obs_positions"):
      np.testing.assert_array_equal(got[key][:n], want[key], err_msg=key)
      assert not got[key][n:].any()
    image = want["kinds"] == TokenKind.IMAGE
    for key in stream.IMAGE_FIELDS:  # compact: the rows of the IMAGE tokens only
      np.testing.assert_array_equal(got[key], want[key][image], err_msg=key)
