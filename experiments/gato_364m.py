"""Gato's 364m preset (docs/METHOD.md table): the paper's batch, schedule and step count."""

from experiments import base


def get_config():
  c = base.base_config()
  c.checkpoint_every_steps = 2000
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.embed_dim = 1536
  c.model.mlp_dim = 4096  # each GEGLU branch: 2/3 of the paper's FF hidden 6144 (see base.py)
  c.model.head_dim = 128
  # TPU v5p-128 (64 chips x 95 GiB), FSDP over the slice, 8 sequences per chip. Per chip (est.,
  # launch/SCALING.md): state 0.1 GiB + activations ~15 GiB without remat + logits ~2 GiB -> ~17 GiB.
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.model.dtype = "bfloat16"
  return c
