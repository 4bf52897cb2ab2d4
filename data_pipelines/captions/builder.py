"""The `captions` dataset: one (64x64 image, caption) pair per example plus the caption's ground truth."""

import numpy as np
import tensorflow_datasets as tfds

from gato_jax.envs import scenes
from gato_jax.envs.control import Progress
from data_pipelines.local_builder import LocalBuilder

_SPLIT_IDS = {"train": 0, "validation": 1}


class CaptionsBuilder(LocalBuilder):
  """Example i of a split is drawn from default_rng([seed, split id, i]): deterministic, order-free."""

  KIND = "captions"
  name = "captions"
  DESCRIPTION = ("Rendered 64x64 scenes of one or two groups of coloured shapes with a generated caption "
                 "('a red circle and two blue squares') and the ground truth (colour, shape, count).")
  DEFAULT_EPISODES = 2000

  def _info(self) -> tfds.core.DatasetInfo:
    return self._build_info(tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, 3), dtype=np.uint8,
                                     encoding_format="png"),
        "caption": tfds.features.Text(),
        "groups": tfds.features.Sequence({
            "color": tfds.features.Text(), "shape": tfds.features.Text(),
            "count": tfds.features.Scalar(dtype=np.int32)}),
    }), self.DESCRIPTION)

  def _split_generators(self, dl_manager):
    del dl_manager
    self.build_metadata.update({"colors": list(scenes.COLORS), "shapes": list(scenes.SHAPES),
                                "count_words": scenes.COUNT_WORDS, "image_size": scenes.IMAGE_SIZE})
    return {"train": self._generate_examples("train", self.num_train),
            "validation": self._generate_examples("validation", self.num_validation)}

  def _generate_examples(self, split: str, num: int):
    progress = Progress(f"captions/{split}", num, unit="pairs")
    for i in range(num):
      rng = np.random.default_rng([self.seed, _SPLIT_IDS[split], i])
      image, text, groups = scenes.sample_scene(rng)
      yield i, {"image": image, "caption": text,
                "groups": {"color": [g.color for g in groups], "shape": [g.shape for g in groups],
                           "count": np.asarray([g.count for g in groups], np.int32)}}
      progress.update(i + 1)
