"""Gato's 79m preset (docs/METHOD.md table): base.py's model, batch, schedule and step count on a TPU pod."""

from experiments import base


def get_config():
  c = base.base_config()  # base.py is the 79m model (8 x 768, 24 heads), batch 512, 1M steps
  c.checkpoint_every_steps = 2000
  # TPU v4-32 (16 chips x 32 GiB), fully sharded (FSDP) over the slice, 32 sequences per chip.
  # Compiled for v4:2x2x4 (bench/results/fit_table.md): the train step needs 8.35 GiB per chip; up to
  # 118 sequences per chip fit (30.0 GiB). Check a change first: gato-train ... --compile_only --topology=v4:2x2x4
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.model.remat_policy = "full"
  c.model.dtype = "bfloat16"
  return c
