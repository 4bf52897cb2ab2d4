"""Test support: tiny configs, models, batches, TFDS datasets and checkpoints (imports experiments/ freely)."""
