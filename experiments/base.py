"""Defaults every experiment starts from; each experiment file overrides what differs."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The three keys every experiment sets at its top level.
  c.num_train_steps = 1_000_000
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 100

  # One vocabulary for data and model (gato_jax.tokenizers.VocabLayout reads these names).
  c.vocab = ml_collections.ConfigDict()
  c.vocab.text_vocab_size = 32000
  c.vocab.num_continuous_bins = 1024
  c.vocab.num_discrete_values = 1024
  c.vocab.pad_to_multiple = 128
  c.vocab.sentencepiece_model = ""  # path; empty = the one data_pipelines/text trains locally

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 8
  c.model.num_heads = 24
  c.model.head_dim = 32
  c.model.embed_dim = 768
  c.model.mlp_dim = 3072
  c.model.dropout_rate = 0.1
  c.model.tie_embeddings = True
  c.model.max_obs_positions = 512  # local observation position table (app.)
  c.model.num_patch_positions = 128  # row / column patch position tables (app.)
  c.model.patch_size = 16
  c.model.resnet_groups = 32  # GroupNorm groups in the patch ResNet block (app.)
  c.model.position_embedding = "none"  # "none" (the paper: local positions only) or "learned"
  c.model.max_length = 1024  # KV cache / learned positions length
  c.model.scan_layers = True
  c.model.remat_policy = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  c.model.dtype = "float32"  # activations: float32 or bfloat16
  c.model.param_dtype = "float32"

  c.data = ml_collections.ConfigDict()
  c.data.mixture = "gato_local"
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.sequence_length = 1024
  c.data.prompt_probability = 0.25
  c.data.prompt_end_fraction = 0.5  # of prompts, the share taken from the end of the other episode
  c.data.shuffle_buffer = 1000

  c.batch_size = 512  # global, across every process

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.peak_learning_rate = 1e-4
  c.optimizer.init_learning_rate = 1e-7
  c.optimizer.warmup_steps = 15_000
  c.optimizer.decay_factor = 10.0  # cosine decay from peak to peak / decay_factor
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0  # 0 disables
  c.optimizer.grad_accum_steps = 1

  # Mesh axes (data, fsdp, tensor); -1 takes whatever devices are left.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_last = 3
  c.checkpoint.keep_every = 0  # also keep every M-th step forever; 0 disables
  c.checkpoint.async_save = True

  c.on_nonfinite = "stop"  # stop | skip
  return c
