"""The generalist study at CPU scale (bench/generalist.py): one Gato on 26 control tasks of 5 domains plus
text and captions, against one specialist per domain on the same compute split by the domains' shares.

This file is the generalist's training run at the small size; bench/generalist.py derives the others
from it (the `study` block: the larger size, the specialists' mixtures and steps, the data it builds,
the evaluation cap). Any key can be overridden on its command line (--config.study.domains=...).
"""

import ml_collections

from experiments import tiny_demo


def get_config():
  c = tiny_demo.get_config()
  c.data.data_dir = "demo_output/generalist/data"
  c.data.mixture = ""  # bench/generalist.py sets it per run (from study.domains and study.language)
  c.data.shuffle_buffer = 128
  # tiny_demo's window and batch: 32 windows of 256 tokens (a compact Atari step is 37 tokens, a
  # Meta-World step 44, a BabyAI step ~60): the same for every run of the study.
  c.data.sequence_length = 256
  c.batch_size = 32
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1  # whatever devices there are, data-parallel
  # Images (BabyAI pixels, Atari, dm_control pixels, captions) go through tiny_pixels' patch ResNet,
  # every image position of a window (a mixed batch has no fixed image count to gather).
  c.model.max_image_tokens = -1
  c.model.patch_channels = 32
  c.model.resnet_groups = 8
  c.optimizer.warmup_steps = 30
  c.checkpoint.keep_last = 1
  c.checkpoint.best_metric = ""
  c.checkpoint_every_steps = 100_000  # only the last step (gato-train always saves it)
  c.log_every_steps = 25
  # No evaluation inside the trainings: the study scores the final checkpoints itself.
  c.evals.validation.every_steps = 0
  c.evals.rollouts.every_steps = 0
  c.evals.captions.every_steps = 0
  c.eval.offline = False
  c.eval.captions = 0
  c.eval.gif = False
  # 10 sampled rollouts a task on unseen seeds, side by side (one batched decode a step): enough for a
  # bootstrap interval, and the cost of a task is its longest episode, not the count.
  c.eval.episodes_per_task = 10
  c.eval.num_envs = 10

  s = c.study = ml_collections.ConfigDict()
  # domain=task,task;...: the specialists are one per domain. Five domains, 26 control tasks. BabyAI
  # includes its pixel level; dm_control goes with MuJoCo (same simulator, same kind of task), and with
  # it dmc_cartpole_swingup_pixels, whose goal (the pole's angle) is only in the 64x64 camera frame.
  s.domains = ";".join([
      "babyai=babyai_gotoredball,babyai_gotolocal,babyai_pickuploc,babyai_opendoor,babyai_putnextlocal,"
      "babyai_gotoobj,babyai_gotoredball_image",
      "metaworld=metaworld_reach,metaworld_push,metaworld_drawer_open,metaworld_button_press,"
      "metaworld_door_open,metaworld_window_open",
      "atari=atari_pong_compact,atari_breakout_compact,atari_freeway_compact",
      "mujoco_dmc=mujoco_inverted_pendulum,mujoco_inverted_double_pendulum,mujoco_reacher,"
      "dmc_cartpole_swingup,dmc_point_mass_easy,dmc_cartpole_swingup_pixels",
      "classic=cartpole,pendulum,mountaincar,lunarlander",
  ])
  # The paper's shares by kind: 85% control (split evenly over the control tasks: a domain's share is
  # its task count over 26), 10% text, 5% captions. Text and captions get a "language" specialist of
  # their own so that the specialists together spend exactly the generalist's steps.
  s.control_share = 0.85
  s.text_share = 0.10
  s.caption_share = 0.05
  # Train / validation / return-measuring episodes per dataset (first matching pattern wins), sized so
  # the whole build takes ~6 min here and is reused by every rerun (gato-data build --skip_built):
  # - BabyAI, classic control, reacher: cheap simulators, 100-300 episodes of short steps;
  # - Meta-World: ~1-4 episodes/s (MuJoCo + metaworld's observation code), 40 episodes of 150 steps;
  # - MuJoCo pendulums and dm_control: 1000-step episodes, 20 of them are 20k steps;
  # - Atari: the experts look ahead in an emulator copy (~30 CPU-s an episode), 3 episodes of up to
  #   4500 steps; dm_control pixels render 20-80 ms a frame in a child process: 6 episodes of 1000.
  s.data = ",".join([
      "text=0/0/0", "captions=1000/100/0", "babyai_*=300/30/20", "cartpole=100/10/20", "pendulum=100/10/20",
      "mountaincar=100/10/20", "lunarlander=50/5/10", "mujoco_reacher=200/20/20", "mujoco_*=20/3/10",
      "dmc_cartpole_swingup_pixels=6/1/2", "dmc_*=20/3/10", "metaworld_*=40/5/10", "atari_*=3/1/2",
  ])
  # Two model sizes, the same batch, window and steps: "small" is tiny_demo's transformer, "large" is
  # 1.5x wider and 1.5x deeper (~3.4x the transformer's parameters; the patch ResNet is the same).
  # Steps: what fits the hour here. Measured on this shared machine: the small generalist runs ~0.4-0.5
  # steps/s (~3.5k tokens/s; the patch ResNet over every image position costs most of it) after ~70 s
  # of start-up and compile, so 120 steps is ~5 min of generalist and as much again for the specialists.
  # That is ~1M tokens over 26 tasks: far below the demo's 1000 steps on 3 tasks (see generalist.md).
  s.sizes = "small,large"
  s.small = ml_collections.ConfigDict({"num_layers": 2, "num_heads": 4, "embed_dim": 128, "mlp_dim": 512,
                                       "steps": 120})
  s.large = ml_collections.ConfigDict({"num_layers": 3, "num_heads": 6, "embed_dim": 192, "mlp_dim": 768,
                                       "steps": 120})
  # Evaluation episodes are capped at this many steps (Atari episodes run to 4500, dm_control and the
  # MuJoCo pendulums to 1000, CartPole 500, LunarLander 1000): a task's rollouts cost its longest
  # episode, and 200 steps still hold a swing-up, a Freeway crossing or two, a Pong volley. A capped task is scored against its
  # expert and random policies rolled out at the same cap on the same seeds (cached in the data_dir),
  # not against the data's full-length returns.
  s.max_steps = 200
  # The reading of the committed numbers (bench/results/generalist.md), rendered under "Where the
  # generalist falls behind"; `--render_only` re-renders the markdown from the JSON with it.
  s.discussion = " ".join([
      "**Reading (small size, 120 steps).** At this budget (~1M tokens over 26 tasks) both the generalist",
      "and the specialists are barely trained: per-domain IQMs lie between -0.04 and 0.20 for both, and",
      "only Freeway (0.97 and 1.00 of the capped expert), reacher (0.72 and 0.79) and, for the generalist,",
      "BabyAI GoToRedBall (0.51) pass half of expert. The one gap with disjoint intervals is Meta-World,",
      "mostly button-press (generalist -0.22 [-0.23, -0.20] against the specialist's 0.05 [-0.02, 0.11]);",
      "the generalist is ahead on reach (0.10 against -0.01). Our guess, not measured: Meta-World's four",
      "continuous actions share the value bins with the 7 other continuous-action tasks, whose action",
      "scales differ, so the generalist's early action distribution is pulled toward theirs. Elsewhere the",
      "intervals overlap. Why the gap is small rather than large, we think: the compute split gives the",
      "generalist and a specialist the same tokens of a domain, but the generalist takes them in 120",
      "updates and the specialist in round(120 x share) = 12-27, so the generalist gets 4-10x more",
      "optimizer steps; at this scale more updates help about as much as sharing the model hurts (text:",
      "generalist 4.31 against the language specialist's 5.09 on the same text tokens). That is not the",
      "paper's regime (its specialists train to convergence): these numbers show the harness, the compute",
      "split and the measures, not interference at scale.",
      "**Large size (3 x 192, same steps; run separately on the same data).** Size moves the gap the",
      "generalist's way, within the noise: its all-domain IQM 0.02 [-0.00, 0.04] against the specialists'",
      "0.01 [-0.01, 0.03]; it is ahead on Meta-World now (-0.03 against -0.05), Atari (0.07 against 0.03),",
      "classic control (0.09 against 0.05) and BabyAI from pixels (0.48 [0.20, 0.76] against 0.21",
      "[-0.07, 0.52]), behind only on MuJoCo / dm_control by 0.01 with overlapping intervals; its text and",
      "caption losses fall to 4.19 and 0.78 (language specialist 4.85 and 1.01). The swing-up from the",
      "camera stays at random for every model at both sizes, as does its state twin: at 120 steps the",
      "budget, not the image path, is what holds it back.",
  ])
  return c
