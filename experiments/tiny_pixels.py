"""The image path on CPU: the tiny Gato on babyai_gotoredball_image (64x64 RGB agent view, 16 patches).

The mission is the same in every episode ("go to the red ball") and the direction says nothing about
where the ball is, so what the policy knows of the ball's place comes through the patch ResNet.
Measured (2-core shared CPU, 1000 + 100 episodes built with seed 0, 50 evaluation episodes each):
step 400 (14.6 CPU-minutes of training): 0.52 of expert [0.40, 0.64], 70% of episodes reach the ball;
step 600 (21.5 CPU-minutes): 0.71 [0.60, 0.82], 86% (`gato-eval --step N`).
"""

from experiments import tiny_demo


def get_config():
  c = tiny_demo.get_config()
  # One pixel-observation control task: what the policy sees of the red ball is the rendered view.
  c.data.mixture = "babyai_gotoredball_image:1"
  c.data.data_dir = "pixels_output/data"
  c.num_train_steps = 800
  # About 25 tokens a step (16 patches + direction + mission + action): ~10 steps a 256-token window,
  # so at most ~170 image positions a sequence go through the patch ResNet.
  c.model.max_image_tokens = -1
  c.model.patch_channels = 32
  c.model.resnet_groups = 8
  c.eval.episodes_per_task = 50
  c.eval.captions = 0
  return c
