"""Gato's 79m preset (GATO_SPEC.md table): the paper's batch, schedule and step count."""

from experiments import base


def get_config():
  c = base.base_config()
  c.num_train_steps = 1_000_000
  c.checkpoint_every_steps = 2000
  c.log_every_steps = 100
  c.model.num_layers = 8
  c.model.num_heads = 24
  c.model.embed_dim = 768
  c.model.mlp_dim = 2048  # each GEGLU branch: 2/3 of the paper's FF hidden 3072 (see base.py)
  c.model.head_dim = 32
  c.data.mixture = "gato_local"
  c.batch_size = 512
  return c
