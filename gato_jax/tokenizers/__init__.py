"""Gato's shared vocabulary and every modality's way in and out of it, for NumPy and TensorFlow alike.

The transforms (values.py, timestep.py) and the stream builders (stream.py) take an array module:
NumPy for acting, TensorFlow's NumPy API inside the input pipeline. `tf_ops` (the TF episode
assembly) is imported explicitly by the input pipeline: acting needs only NumPy.
"""

from gato_jax.tokenizers import stream
from gato_jax.tokenizers.layout import TokenKind, VocabLayout
from gato_jax.tokenizers.timestep import (
    MAX_OBS_POSITIONS, TextTokenizer, action_from_tokens, action_ids, action_token_ranges, field_ids,
    tokenize_action, tokenize_field, tokenize_observation, tokenize_timestep)
from gato_jax.tokenizers.values import (
    NUM_PATCH_POSITIONS, PATCH_SIZE, action_to_unit, detokenize_continuous, detokenize_discrete,
    image_to_patches, mu_law_decode, mu_law_encode, patch_intervals, patches_to_image, tokenize_continuous,
    tokenize_discrete)
