"""dm_control reacher from its camera, recorded under perturbed actions (DART, Laskey et al. 2017): a
`--module_import` module that registers `dmc_reacher_easy_pixels_dart`.

The executed action is the expert's plus N(0, 0.5) noise (clipped to [-1, 1]); the recorded label is the
expert's own, so each label answers the state the noise left and the previous label stops predicting
the next one (the copycat shortcut that kept bench/pixels_steer.py's camera model at random). Train on
it, score on the clean task (the noise acts only on this task's own env steps):

  gato-data build --module_import=data_pipelines.reacher_dart \\
      --dataset=dmc_reacher_easy_pixels_dart --data_dir=demo_output/pixels_steer/data \\
      --episodes=800 --validation_episodes=40 --return_episodes=20
  gato-train --config experiments/pixels_steer.py --module_import=data_pipelines.reacher_dart \\
      --workdir=demo_output/pixels_dart --config.data.mixture=dmc_reacher_easy_pixels_dart \\
      --config.num_train_steps=400 --config.checkpoint_every_steps=400
  gato-eval --config experiments/pixels_steer.py --workdir demo_output/pixels_dart \\
      --config.eval.tasks=dmc_reacher_easy_pixels

Measured once (2026-12-04, 400 steps, 7 min here): 0.08 [0.02, 0.16] of expert (return 3.0 against the
expert's 34.0 and random's 0.2), where the same run on clean episodes scored 0.0 in every rollout.
"""

import dataclasses

import numpy as np

import data_pipelines as dp
from gato_jax.envs import registry

NAME = "dmc_reacher_easy_pixels_dart"
NOISE = 0.5
_rng = np.random.default_rng(0)  # builds are sequential: the same counts give the same episodes
_base = registry.get("dmc_reacher_easy_pixels")


def _perturbed(action):
  noisy = np.asarray(action, np.float32) + _rng.normal(0.0, NOISE, np.shape(action))
  return np.clip(noisy, -1.0, 1.0).astype(np.float32)


dp.register_control_task(dataclasses.replace(
    _base, name=NAME, spec=dataclasses.replace(_base.spec, name=NAME), action_fn=_perturbed,
    description=_base.description + f" Recorded under N(0, {NOISE}) action noise (DART), expert labels."))
