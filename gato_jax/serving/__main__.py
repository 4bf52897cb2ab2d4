"""`python -m gato_jax.serving`: gato-serve from this checkout."""

from gato_jax.serving import cli

if __name__ == "__main__":
  cli.run()
