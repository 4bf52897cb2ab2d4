"""gato-jax: train Gato-style generalist agents with JAX, Flax, SeqIO and Orbax."""

__version__ = "0.1.0"
