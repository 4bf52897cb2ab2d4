"""Tiny TFDS datasets written with the production schema (gato_jax/data/schema.py), for tests and benchmarks.

They are written by real `tfds.core.GeneratorBasedBuilder`s (control episodes with an RLDS `steps`
Dataset, text documents, captioned images) so the SeqIO side reads exactly what `gato-data build`
writes. Builders skip TFDS registration: they are read back from their files by name and data_dir.
"""

import os
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from gato_jax.data.schema import episode_features
from gato_jax.episodes import ActionSpec, FieldSpec, TaskSpec, flatten_spec

def random_observation(spec: TaskSpec, rng: np.random.Generator, words=("go", "to", "the", "red", "ball")):
  def draw(tree):
    out = {}
    for key, field in tree.items():
      if isinstance(field, Mapping):
        out[key] = draw(field)
      elif field.modality == "text":
        out[key] = " ".join(rng.choice(words, int(rng.integers(2, 6))))
      elif field.modality == "image":
        out[key] = rng.integers(0, 256, field.shape, dtype=np.uint8)
      elif field.modality == "discrete":
        out[key] = rng.integers(0, field.num_values, field.shape).astype(np.int32)
      else:
        out[key] = rng.normal(scale=2.0, size=field.shape).astype(np.float32)
    return out
  return draw(spec.observation)


def random_action(spec: ActionSpec, rng: np.random.Generator):
  if spec.kind == "continuous":
    return rng.uniform(spec.low, spec.high).reshape(spec.shape).astype(np.float32)
  if spec.kind == "discrete":
    return np.int32(rng.integers(0, spec.num_values[0]))
  return rng.integers(0, spec.num_values).reshape(spec.shape).astype(np.int32)


def random_episode(spec: TaskSpec, rng: np.random.Generator, num_steps: int, episode_id: int) -> dict:
  """A valid episode of `num_steps` steps in the TFDS example format (steps as a list of dicts)."""
  mission = random_observation(spec, rng)  # text fields stay fixed within an episode, as a mission does
  steps = []
  for t in range(num_steps):
    obs = random_observation(spec, rng)
    for path, field in flatten_spec(spec.observation):
      if field.modality == "text":
        node, src = obs, mission
        *parents, leaf = path.split("/")
        for p in parents:
          node, src = node[p], src[p]
        node[leaf] = src[leaf]
    steps.append({"observation": obs, "action": random_action(spec.action, rng),
                  "reward": np.float32(rng.uniform()), "is_first": t == 0, "is_last": t == num_steps - 1,
                  "is_terminal": t == num_steps - 1})
  return {"steps": steps, "episode_return": np.float32(sum(s["reward"] for s in steps)),
          "episode_id": np.int64(episode_id)}


def _write(builder_cls, data_dir: str, num_shards: int | None):
  builder = builder_cls(data_dir=os.fspath(data_dir))
  config = tfds.download.DownloadConfig(num_shards=num_shards) if num_shards else None
  builder.download_and_prepare(download_config=config)
  return builder


def make_builder(name: str, features, generate: Callable[[str], Sequence[dict]], metadata: dict,
                 version: str = "1.0.0"):
  """A GeneratorBasedBuilder class named `name` writing `generate(split)` for train and validation."""

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=features,
                                 metadata=tfds.core.MetadataDict(metadata))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in ("train", "validation")}

  def _generate_examples(self, split):
    for i, example in enumerate(generate(split)):
      yield f"{split}_{i}", example

  cls = type(name, (tfds.core.GeneratorBasedBuilder,), {
      "name": name, "VERSION": tfds.core.Version(version), "_info": _info,
      "_split_generators": _split_generators, "_generate_examples": _generate_examples,
      # No code path: TFDS would look for checksums next to this module (and needs importlib_resources).
      "code_path": None, "__module__": __name__}, skip_registration=True)
  return cls


def build_control_dataset(data_dir, spec: TaskSpec, num_episodes: Mapping[str, int] | None,
                          num_steps: tuple[int, int] = (3, 12), seed: int = 0,
                          num_shards: int | None = None, episodes: Mapping[str, Sequence[dict]] | None = None):
  """Writes `spec.name` with random valid episodes (or the given ones) to data_dir; returns the builder.

  Train episodes get ids [0, n), validation ids [1_000_000, ...), so ids identify an episode.
  """
  def generate(split):
    if episodes is not None:
      return episodes[split]
    rng = np.random.default_rng([seed, split == "train"])
    base = 0 if split == "train" else 1_000_000
    return [random_episode(spec, rng, int(rng.integers(num_steps[0], num_steps[1] + 1)), base + i)
            for i in range(num_episodes[split])]

  counts = {k: len(v) for k, v in episodes.items()} if episodes is not None else num_episodes
  metadata = {"kind": "control", "domain": "test", "task_spec": spec.to_dict(), "expert_return": 1.0,
              "random_return": 0.0,
              "episodes_kept": sum(counts.values()), "episodes_rejected": 0}
  return _write(make_builder(spec.name, episode_features(spec), generate, metadata), data_dir, num_shards)


def build_text_dataset(data_dir, documents: Mapping[str, Sequence[str]], name: str = "text"):
  features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
  generate = lambda split: [{"text": d} for d in documents[split]]
  return _write(make_builder(name, features, generate, {"kind": "text", "domain": "text"}), data_dir, None)


CAPTION_COLORS = ("red", "green", "blue", "yellow")
CAPTION_SHAPES = ("square", "bar")


def build_captions_dataset(data_dir, num_examples: Mapping[str, int], image_size: int = 32,
                           seed: int = 0, name: str = "captions"):
  """Coloured squares / bars on black with captions like "2 red squares" and their attributes."""
  palette = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (220, 220, 30)}
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(image_size, image_size, 3)), "caption": tfds.features.Text(),
      "shape": tfds.features.Text(), "color": tfds.features.Text(), "count": np.int32})

  def generate(split):
    rng = np.random.default_rng([seed, split == "train", 7])
    out = []
    for _ in range(num_examples[split]):
      color, shape = rng.choice(CAPTION_COLORS), rng.choice(CAPTION_SHAPES)
      count = int(rng.integers(1, 4))
      image = np.zeros((image_size, image_size, 3), np.uint8)
      for _ in range(count):
        y, x = rng.integers(0, image_size - 8, 2)
        image[y:y + (4 if shape == "bar" else 8), x:x + 8] = palette[color]
      out.append({"image": image, "caption": f"{count} {color} {shape}{'s' if count > 1 else ''}",
                  "shape": shape, "color": color, "count": count})
    return out

  return _write(make_builder(name, features, generate, {"kind": "captions", "domain": "captions"}), data_dir,
                None)


def train_tiny_sentencepiece(model_path, corpus: Sequence[str], vocab_size: int = 64) -> str:
  """Trains a small unigram model (pad 0, eos 1, unk 2, no bos: seqio's conventions) on `corpus`."""
  import sentencepiece as spm
  model_path = os.fspath(model_path)
  os.makedirs(os.path.dirname(model_path), exist_ok=True)
  prefix = model_path[:-len(".model")] if model_path.endswith(".model") else model_path
  spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=prefix, vocab_size=vocab_size,
                                 model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False, minloglevel=2)
  return prefix + ".model"


def babyai_like_spec(name: str = "tiny_grid") -> TaskSpec:
  """Mission text, a 32x32 RGB view, a discrete direction; 7 discrete actions."""
  return TaskSpec(name, {"mission": FieldSpec("text"), "image": FieldSpec("image", (32, 32, 3)),
                         "direction": FieldSpec("discrete", (), num_values=4)},
                  ActionSpec("discrete", (), (7,)))


def cartpole_like_spec(name: str = "tiny_pole") -> TaskSpec:
  return TaskSpec(name, {"state": FieldSpec("continuous", (4,))}, ActionSpec("discrete", (), (2,)))


def reach_like_spec(name: str = "tiny_reach") -> TaskSpec:
  """Nested continuous observation, continuous 2-d action in [-1, 1]."""
  return TaskSpec(name, {"arm": {"joints": FieldSpec("continuous", (3,)),
                                 "goal": FieldSpec("continuous", (2,), mu_law=False)}},
                  ActionSpec("continuous", (2,), (), (-1.0, -1.0), (1.0, 1.0)))


WORDS = tuple("go to the red blue green yellow ball box key door open pick up put next a an and then "
              "square squares bar bars 1 2 3 of is it on".split())


def build_tiny_data_dir(data_dir, num_episodes=(20, 4), text_vocab_size: int = 512, seed: int = 0) -> list:
  """A data_dir with one tiny dataset of every kind and the SentencePiece model the config expects.

  Control: tiny_grid (mission text, 32x32 image, discrete), tiny_pole (4 continuous, discrete action),
  tiny_reach (nested continuous, continuous action); text; captions (32x32 images). Returns their
  DatasetRefs (control specs left to the metadata, as for any contract-following dataset).
  """
  from gato_jax.data.sources import DatasetRef
  tfds.disable_progress_bar()
  train, validation = num_episodes
  specs = [babyai_like_spec(), cartpole_like_spec(), reach_like_spec()]
  for i, spec in enumerate(specs):
    build_control_dataset(data_dir, spec, {"train": train, "validation": validation}, seed=seed + i)
  rng = np.random.default_rng(seed)
  docs = [" ".join(rng.choice(WORDS, int(rng.integers(5, 120)))) for _ in range(train + validation)]
  build_text_dataset(data_dir, {"train": docs[:train], "validation": docs[train:]})
  build_captions_dataset(data_dir, {"train": 6 * train, "validation": 6 * validation}, seed=seed)
  train_tiny_sentencepiece(os.path.join(os.fspath(data_dir), "sentencepiece", f"text_{text_vocab_size}.model"),
                           docs + ["2 red squares", "1 blue bar", "3 yellow bars"], vocab_size=64)
  return ([DatasetRef(s.name, "control") for s in specs]
          + [DatasetRef("text", "text"), DatasetRef("captions", "captions")])


def tiny_config(data_dir, mixture: str = "tiny_grid:1,tiny_pole:1,tiny_reach:1,text:1,captions:1",
                sequence_length: int = 64, batch_size: int = 8):
  """experiments/tiny_demo.py pointed at a tiny data_dir."""
  from experiments import tiny_demo
  config = tiny_demo.get_config()
  config.data.data_dir = os.fspath(data_dir)
  config.data.mixture = mixture
  config.data.sequence_length = sequence_length
  config.data.shuffle_buffer = 16
  config.batch_size = batch_size
  return config
