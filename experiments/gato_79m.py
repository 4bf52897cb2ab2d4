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
  # TPU v4-32 (16 chips x 32 GiB), fully sharded (FSDP) over the slice, 32 sequences per chip.
  # Per chip (est., launch/SCALING.md): state 0.1 GiB + activations ~8 GiB with full remat (~60 GiB
  # without: 24 heads of 1024x1024 scores per layer) + f32 logits and their gradient ~8 GiB -> ~16 GiB.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.model.remat_policy = "full"
  c.model.dtype = "bfloat16"
  return c
