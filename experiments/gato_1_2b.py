"""Gato's 1.2b preset (docs/METHOD.md table): the paper's batch, schedule and step count."""

from experiments import base


def get_config():
  c = base.base_config()
  c.checkpoint_every_steps = 2000
  c.model.num_layers = 24
  c.model.num_heads = 16
  c.model.embed_dim = 2048
  c.model.mlp_dim = 5504  # each GEGLU branch: 2/3 of the paper's 8192, rounded up to 43 x 128
  c.model.head_dim = 128
  # TPU v5e-256 (256 chips x 16 GiB), FSDP over the slice, 2 sequences per chip. Per chip (est.,
  # launch/SCALING.md): state 0.1 GiB + activations ~2.5 GiB with dots_with_no_batch_dims_saveable
  # (~10 GiB without: too tight on 16 GiB) + logits 0.5 GiB + one gathered layer 0.4 GiB -> ~3.5 GiB.
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.model.remat_policy = "dots_with_no_batch_dims_saveable"
  c.model.dtype = "bfloat16"
  return c
