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
  # TPU v5e-256 (256 chips x 16 GiB), 2 sequences per chip: FSDP over 16 chips, data parallel across
  # 16 such groups. FSDP over all 256 left each chip 8 rows of the 2048-wide embed axis, and XLA:TPU
  # then all-reduced every layer's whole bf16 gradient (4.0 GiB per step and chip) instead of
  # reduce-scattering it; data=16 x fsdp=16 reduce-scatters them and sends 30% fewer bytes per step
  # (compiled here: docs/DECISIONS.md; the fit in bench/results/fit_table.md).
  # Check any change first: gato-train ... --compile_only --topology=v5e:16x16
  c.mesh.data, c.mesh.fsdp = 16, -1
  c.model.remat_policy = "dots_with_no_batch_dims_saveable"
  c.model.dtype = "bfloat16"
  return c
