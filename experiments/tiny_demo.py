"""The CPU demo: a few-million-parameter Gato on control_demo, 8 fake devices, minutes."""

from experiments import base


def get_config():
  c = base.base_config()
  c.num_train_steps = 600
  c.checkpoint_every_steps = 200
  c.log_every_steps = 20
  # A small text vocabulary: the output layer over the vocabulary dominates the cost at this size.
  c.vocab.text_vocab_size = 512
  c.vocab.num_continuous_bins = 1024
  c.vocab.num_discrete_values = 1024
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.head_dim = 32
  c.model.embed_dim = 128
  c.model.mlp_dim = 512
  c.model.dropout_rate = 0.0
  c.model.resnet_groups = 8
  c.model.patch_channels = 16
  c.model.max_image_tokens = 0  # control_demo has no image field: skip the patch ResNet entirely
  c.model.max_length = 256
  c.model.scan_layers = False
  c.data.mixture = "control_demo"
  c.data.data_dir = "demo_output/data"
  c.data.sequence_length = 256
  c.data.shuffle_buffer = 256
  c.batch_size = 32
  c.optimizer.peak_learning_rate = 1e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.01
  c.mesh.data = 2
  c.mesh.fsdp = 2
  c.mesh.tensor = 2
  c.checkpoint.keep_last = 2
  # A lightly trained model acts best greedily; fewer re-prefills at L=256 with roll_keep 0.5.
  c.eval.episodes_per_task = 20
  c.eval.greedy = True
  c.eval.roll_keep = 0.5
  return c
