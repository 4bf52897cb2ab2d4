"""Gato's shared vocabulary and every modality's way in and out of it (NumPy here, TensorFlow in tf_ops)."""

from gato_jax.tokenizers.layout import TokenKind, VocabLayout
