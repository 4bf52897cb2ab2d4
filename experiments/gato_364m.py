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
  # TPU v5p-128 (64 chips x 95 GiB), FSDP over the slice, 8 sequences per chip. Compiled for v5p:4x4x4
  # (bench/results/fit_table.md): the train step needs 14.6 GiB per chip; up to 52 sequences per chip
  # fit (92.2 GiB). Check a change first: gato-train ... --compile_only --topology=v5p:4x4x4
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.model.dtype = "bfloat16"
  return c
