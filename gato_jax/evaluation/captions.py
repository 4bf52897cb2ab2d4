"""The `captions` evaluator: the model captions validation images of the `captions` dataset, greedily and
by sampling, and each caption is scored against the groups the image was drawn with.

The model sees a validation image's patches (IMAGE tokens, as in training sequences) and generates
TEXT tokens until EOS, greedily and by sampling at temperature 0.9 (the paper's setting), restricted
to the text ids. Each caption is parsed back into groups (count, colour, shape) and scored against
the ground truth the dataset stores with the image:
  exact_match      the generated groups equal the true ones (order-free: captions list groups in a
                   random order)
  attribute_match  per true group, the share of its (count, colour, shape) matched by the best
                   generated group, averaged; generated groups that match nothing count as misses
"""

import functools
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from gato_jax.data import sources
from gato_jax.evaluation import datasets
from gato_jax.acting import decode as decode_lib
from gato_jax.acting.decode import sample_restricted, token_features
from gato_jax.evaluation.context import EvalContext
from gato_jax.evaluation.options import EvalSpec
from gato_jax.tokenizers import TokenKind, VocabLayout, image_to_patches, patch_intervals, stream


# ------------------------------------------------------------------------------------------------
# Caption generation.
# ------------------------------------------------------------------------------------------------

def image_stream(image, num_patch_positions: int, max_obs_positions: int) -> dict[str, np.ndarray]:
  """An image as the IMAGE tokens of a captions sequence (as tf_ops.image_tokens makes them)."""
  rows, cols = patch_intervals(image.shape[0], image.shape[1], num_patch_positions)
  return stream.number_positions(stream.of_patches(image_to_patches(image), rows, cols), max_obs_positions)


def _generate(graphdef, params, prompt, rng, temperature, *, num_tokens, text_vocab_size, greedy):
  """Prefill the image tokens, then `num_tokens` TEXT tokens, each fed back: ids [B, num_tokens].
  The layers are separate buffers (decode.split), as in acting: a scanned preset's stacked weights
  and caches are not sliced and restacked at every token."""
  model, weights = decode_lib.merge(graphdef, params)
  length = prompt["tokens"].shape[1] + num_tokens
  logits, cache = model.prefill(prompt, max_length=length, last_only=True, layers=weights.chunks)

  def one_token(carry, key):
    logits, cache = carry
    token = sample_restricted(logits[:, -1], 0, text_vocab_size, key, temperature, greedy)
    logits, cache = model.decode(token_features(token, TokenKind.TEXT), cache, last_only=True,
                                 layers=weights.for_rows(token.shape[0]), images=False)
    return (logits, cache), token

  _, tokens = jax.lax.scan(one_token, (logits, cache), jax.random.split(rng, num_tokens))
  return tokens.T


def generate_captions(model, layout: VocabLayout, text_tokenizer, images: Sequence[np.ndarray], *,
                      greedy: bool, temperature: float = 1.0, max_tokens: int = 24, seed: int = 0) -> list[str]:
  """Captions for `images` (HxWx3 uint8), decoded up to the first EOS."""
  options = model.options
  streams = [image_stream(np.asarray(im, np.uint8), options.num_patch_positions, options.max_obs_positions)
             for im in images]
  prompt = {k: np.stack([s[k] for s in streams]) for k in streams[0]}
  graphdef, params = decode_lib.split(model)
  generate = jax.jit(functools.partial(_generate, graphdef),
                     static_argnames=("num_tokens", "text_vocab_size", "greedy"))
  ids = np.asarray(generate(params, prompt, jax.random.key(seed), jnp.float32(temperature),
                            num_tokens=max_tokens, text_vocab_size=layout.text_vocab_size, greedy=greedy))
  eos = text_tokenizer.vocab.eos_id
  captions = []
  for row in ids:
    row = list(row)
    if eos in row:
      row = row[:row.index(eos)]
    captions.append(text_tokenizer.decode(row))
  return captions


# ------------------------------------------------------------------------------------------------
# Caption scoring.
# ------------------------------------------------------------------------------------------------

def parse_caption(caption: str, colors: Sequence[str], shapes: Sequence[str],
                  count_words: Mapping[int, str]) -> list[tuple[int, str, str]]:
  """'a red circle and two blue squares' -> [(1, 'red', 'circle'), (2, 'blue', 'square')]."""
  counts = {w: n for n, w in count_words.items()}
  pattern = re.compile(r"\b(%s)\s+(%s)\s+(%s)s?\b" % ("|".join(map(re.escape, counts)),
                                                       "|".join(map(re.escape, colors)),
                                                       "|".join(map(re.escape, shapes))))
  return [(counts[c], color, shape) for c, color, shape in pattern.findall(caption.lower())]


def score_caption(generated: Sequence[tuple[int, str, str]], truth: Sequence[tuple[int, str, str]]) -> dict:
  """exact_match and attribute_match (see the module docstring) of parsed groups."""
  exact = sorted(generated) == sorted(truth)
  matched = []
  for group in truth:
    best = max([sum(a == b for a, b in zip(group, g)) / 3.0 for g in generated] or [0.0])
    matched.append(best)
  extra = max(0, len(generated) - len(truth))
  attribute = sum(matched) / (len(truth) + extra) if truth else float(not generated)
  return {"exact_match": float(exact), "attribute_match": float(attribute)}


def caption_evaluation(model, config, layout: VocabLayout, text_tokenizer, *, num_examples: int,
                       temperature: float, max_tokens: int, seed: int = 0) -> dict:
  """Greedy and sampled captions of validation images of the `captions` dataset, scored."""
  version_dir = sources.dataset_version_dir("captions", config.data.data_dir)
  if version_dir is None:
    raise datasets.EvaluationError(f"captions: no dataset under {config.data.data_dir}; build it with "
                                   f"`gato-data build --dataset=captions --data_dir={config.data.data_dir}`")
  # The builder recorded its vocabulary of colours, shapes and count words: parse with exactly those.
  vocabulary = sources.read_metadata("captions", config.data.data_dir)
  builder = tfds.builder_from_directory(version_dir)
  examples = list(tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False).take(num_examples)))
  images = [e["image"] for e in examples]
  truths = [[(int(n), c.decode(), s.decode()) for c, s, n in
             zip(e["groups"]["color"], e["groups"]["shape"], e["groups"]["count"])] for e in examples]
  count_words = {int(k): v for k, v in vocabulary["count_words"].items()}
  parse = functools.partial(parse_caption, colors=list(vocabulary["colors"]), shapes=list(vocabulary["shapes"]),
                            count_words=count_words)
  modes = {"greedy": dict(greedy=True), f"temperature_{temperature:g}": dict(greedy=False,
                                                                            temperature=temperature)}
  report: dict[str, Any] = {"modes": {}, "examples": []}
  generated_by_mode = {}
  for mode, kwargs in modes.items():
    captions = generate_captions(model, layout, text_tokenizer, images, max_tokens=max_tokens, seed=seed,
                                 **kwargs)
    generated_by_mode[mode] = captions
    scores = [score_caption(parse(c), t) for c, t in zip(captions, truths)]
    report["modes"][mode] = {"exact_match": float(np.mean([s["exact_match"] for s in scores])),
                             "attribute_match": float(np.mean([s["attribute_match"] for s in scores])),
                             "examples": len(scores)}
  sampled_mode = list(modes)[1]
  for i, e in enumerate(examples[:8]):
    report["examples"].append({"truth": e["caption"].decode(), "greedy": generated_by_mode["greedy"][i],
                               sampled_mode: generated_by_mode[sampled_mode][i]})
  return report


class CaptionsEvaluator:
  """config.eval.captions validation images captioned and scored (nothing when the data_dir has no
  captions dataset or captions = 0)."""
  report_key = "captions"

  def __init__(self, spec: EvalSpec, context: EvalContext):
    self.spec, self.context = spec, context

  def enabled(self) -> bool:
    return bool(self.spec.options.captions) and self.context.captions_built

  def run(self, model, step: int) -> dict[str, Any]:
    del step
    e = self.spec.options
    return caption_evaluation(model, self.context.config, self.context.layout, self.context.text_tokenizer,
                              num_examples=e.captions, temperature=e.caption_temperature,
                              max_tokens=e.caption_max_tokens, seed=e.seed)

  def scalars(self, section: dict[str, Any]) -> dict[str, float]:
    return {f"{self.spec.name}/{mode}/{key}": float(m[key]) for mode, m in section.get("modes", {}).items()
            for key in ("exact_match", "attribute_match")}
