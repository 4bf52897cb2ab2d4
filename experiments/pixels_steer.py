"""Pixels that steer (bench/pixels_steer.py): dm_control reacher easy learned from its 64x64 camera alone,
beside the same training on its state twin, at the generalist study's small size.

The target moves every episode and its place is in no observation but the camera frame, so a policy
above random has read it from pixels. Any key can be overridden on the command line.
"""

import ml_collections

from experiments import generalist_study


def get_config():
  c = generalist_study.get_config()
  c.data.data_dir = "demo_output/pixels_steer/data"
  del c.study
  s = c.study = ml_collections.ConfigDict()
  # The camera task first: it is the claim; the state twin says what the same budget buys without it.
  s.tasks = "dmc_reacher_easy_pixels,dmc_reacher_easy"
  # train / validation / return-measuring episodes (50 steps each; frames render ~5 ms each in the
  # renderer child, so the pixel build is ~5 min here).
  s.data = "dmc_reacher_easy*=800/40/20"
  # The generalist study's small transformer and patch ResNet (tiny_demo's 2 x 128), one size, with
  # more steps than the study gives a domain (~12 min of training here).
  s.sizes = "small"
  s.small = generalist_study.get_config().study.small
  s.small.steps = 400
  s.max_steps = 0  # the tasks' own 50-step episodes: nothing is capped
  c.eval.episodes_per_task = 20  # a bootstrap interval narrow enough to tell "above random"
  c.eval.num_envs = 20
  return c
