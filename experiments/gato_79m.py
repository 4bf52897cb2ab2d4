"""Gato's 79m preset (docs/METHOD.md table): base.py's model, batch, schedule and step count on a TPU pod."""

from experiments import base


def get_config():
  c = base.base_config()  # base.py is the 79m model (8 x 768, 24 heads), batch 512, 1M steps
  c.checkpoint_every_steps = 2000
  # TPU v4-32 (16 chips x 32 GiB), fully sharded (FSDP) over the slice, 32 sequences per chip.
  # Per chip (est., launch/SCALING.md): state 0.1 GiB + activations ~8 GiB with full remat (~60 GiB
  # without: 24 heads of 1024x1024 scores per layer) + f32 logits and their gradient ~8 GiB -> ~16 GiB.
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.model.remat_policy = "full"
  c.model.dtype = "bfloat16"
  return c
