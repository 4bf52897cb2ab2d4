"""Few-shot study at CPU scale: tiny_demo's model pretrained on three Meta-World tasks, reach held out.

This file is the pretraining run; bench/fewshot.py derives the fine-tuning runs from it (the held-out
task alone, N expert episodes, `fewshot.finetune_steps` steps, from the pretrained parameters or from
scratch) and evaluates each on the held-out task. Any key can be overridden on its command line.
"""

import ml_collections

from experiments import tiny_demo


def get_config():
  c = tiny_demo.get_config()
  c.num_train_steps = 250
  c.checkpoint_every_steps = 250
  c.log_every_steps = 50
  # Every Meta-World arm task but the held-out one: the same 39-float observation and 4-float action.
  c.data.mixture = "metaworld_push:1,metaworld_drawer_open:1,metaworld_button_press:1"
  c.data.data_dir = "demo_output/fewshot/data"
  # Sized for a shared 2-core machine (the whole study in about half an hour): 16 windows of 128 tokens,
  # about three Meta-World steps each (44 tokens a step; the goal is in the observation).
  c.data.sequence_length = 128
  c.batch_size = 16
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1  # whatever devices there are, data-parallel
  c.checkpoint.keep_last = 1
  c.eval.tasks = "metaworld_reach"
  c.eval.episodes_per_task = 20
  c.eval.num_envs = 20  # all of them side by side: one batched decode per step
  c.eval.prompt_tokens = 44  # one demonstration step (the end of a successful episode) of the 128
  c.eval.offline = False
  c.eval.captions = 0
  c.eval.gif = False

  c.fewshot = ml_collections.ConfigDict()
  c.fewshot.held_out = "metaworld_reach"
  c.fewshot.episodes = "1,10,100"  # expert episodes of the held-out task per fine-tuning run
  c.fewshot.pretrain_episodes = 100  # per pretraining task
  c.fewshot.validation_episodes = 20  # of every dataset (prompts and offline checks)
  c.fewshot.finetune_steps = 150  # the same for fine-tuning and from scratch
  c.fewshot.peak_learning_rate = 1e-3  # the same for fine-tuning and from scratch
  c.fewshot.warmup_steps = 15
  return c
