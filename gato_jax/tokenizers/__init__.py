"""Gato's shared vocabulary and every modality's way in and out of it (NumPy here, TensorFlow in tf_ops).

`tf_ops` (TensorFlow) is imported explicitly by the input pipeline: acting needs only NumPy.
"""

from gato_jax.tokenizers import stream
from gato_jax.tokenizers.layout import TokenKind, VocabLayout
from gato_jax.tokenizers.timestep import (
    MAX_OBS_POSITIONS, TextTokenizer, action_from_tokens, action_to_unit, action_token_ranges,
    tokenize_action, tokenize_field, tokenize_observation, tokenize_timestep)
from gato_jax.tokenizers.values import (
    NUM_PATCH_POSITIONS, PATCH_SIZE, detokenize_continuous, detokenize_discrete, image_to_patches,
    mu_law_decode, mu_law_encode, patch_intervals, patches_to_image, tokenize_continuous, tokenize_discrete)
