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
  # Width of EACH GEGLU branch (gate and up). 2/3 of the paper's FF hidden (3072 here) keeps the
  # paper's feed-forward parameter count 2 * width * FF (GLU-variants convention, Shazeer 2020).
  c.model.mlp_dim = 2048
  c.model.dropout_rate = 0.1
  c.model.tie_embeddings = True
  c.model.max_obs_positions = 512  # local observation position table (app.)
  c.model.num_patch_positions = 128  # row / column patch position tables (app.)
  c.model.resnet_groups = 32  # GroupNorm groups in the patch ResNet block (app.)
  c.model.patch_channels = 128  # channels of the patch ResNet (a multiple of resnet_groups)
  c.model.patch_stem_stride = 4  # stem conv kernel = stride: 16x16 pixels -> a 4x4 map per patch
  # Image positions the patch ResNet encodes per sequence: -1 = every position (no gather), K > 0 =
  # the first K image positions are gathered and encoded, 0 = no image encoder at run time (for
  # image-free mixtures). Image positions beyond K embed as NaN, so the non-finite check stops the run.
  c.model.max_image_tokens = -1
  c.model.position_embedding = "none"  # "none" (the paper: local positions only) or "learned"
  c.model.max_length = 1024  # KV cache / learned positions length
  c.model.norm_type = "layer_norm"  # pre-norm: layer_norm | rms_norm
  # Attention kernel (gato_jax/model/attention.py): auto | xla | cudnn | blocked (causal blocks of 256
  # queries skipping the masked half: what auto picks on CPU for L > 256) | pallas_tpu (splash) |
  # flash_tpu | pallas_gpu.
  c.model.attention_impl = "auto"
  c.model.scan_layers = True
  # One matmul for q, k, v and one for both GEGLU branches (kernels concatenated at run time: same
  # parameters and checkpoints). Off by default: it changes float rounding, and with tensor > 1 the
  # concatenated kernel is resharded every step.
  c.model.fused_projections = False
  c.model.remat_policy = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  # Continuous-bin rows of the token table: "normal" (the paper: independent rows) or "smooth" (start
  # neighbouring bins close: gato_jax/model/value_init.py; measured in docs/DECISIONS.md).
  c.model.continuous_init = "normal"
  c.model.dtype = "float32"  # activations: float32 or bfloat16
  c.model.param_dtype = "float32"

  c.data = ml_collections.ConfigDict()
  c.data.mixture = "gato_local"
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.sequence_length = 1024
  c.data.prompt_probability = 0.25
  c.data.prompt_end_fraction = 0.5  # of prompts, the share taken from the end of the other episode
  # A prompt is k whole timesteps, k uniform in [1, k_max]: the most that fit in this share of L.
  c.data.max_prompt_fraction = 0.5
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
  # Logical-axis rules (gato_jax/partitioning.py): `rules` replaces the default table (empty = default),
  # `extra_rules` go in front of it, e.g. sequence sharding: (("activation_length", "tensor"),).
  c.mesh.rules = ()
  c.mesh.extra_rules = ()
  # Multi-slice (ICI x DCN): with num_slices > 1, dcn_axis (data or fsdp) spans the slices.
  c.mesh.num_slices = 1
  c.mesh.dcn_axis = "data"

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_last = 3
  c.checkpoint.keep_every = 0  # also keep every M-th step forever; 0 disables
  c.checkpoint.async_save = True
  c.checkpoint.restore_data_iterator = True  # False: resume the state but restart input from the seed
  c.checkpoint.export_params = True  # at the end, params alone to <workdir>/params for evaluation
  # A committed checkpoint that cannot be read: fallback (to the newest readable; refuse when none is),
  # restart (from step 0 when none is readable) or fail (refuse at once). Transient I/O errors are retried.
  c.checkpoint.on_unreadable = "fallback"
  # Keep the best scored step beside the last ones (Orbax's best_fn): a scalar of an evaluator that runs
  # during training (config.evals), e.g. "validation/action_accuracy" (mean over tasks) or
  # "rollouts/normalized_score"; empty = keep by recency only. gato-eval --step=best and
  # init_from=WORKDIR@best read that step.
  c.checkpoint.best_metric = "validation/action_accuracy"
  c.checkpoint.best_mode = "max"  # max | min (for a loss)

  c.on_nonfinite = "stop"  # stop (report the step and tasks, exit) | skip (drop that update)
  c.max_consecutive_skips = 10  # on_nonfinite=skip: stop (exit 3) after this many non-finite steps in a row
  c.peak_flops_per_device = 0.0  # for MFU; 0 = known accelerator table, or measured on CPU

  # Fine-tuning (gato_jax/training/init_from.py, optimizer.py). init_from: another run's parameters
  # only (a workdir, PATH@STEP, a checkpoint step dir or an exported params/ dir; local or gs://) for a
  # fresh run; resuming this run's own checkpoints wins. train_only / freeze: comma-separated module
  # paths (globs) or axis:<logical axis>; frozen parameters get no optimizer state.
  c.init_from = ""
  c.train_only = ""  # empty = every parameter (minus `freeze`)
  c.freeze = ""  # e.g. "embedding" or "sequence_model"

  # Evaluation of checkpoints (gato-eval): online rollouts in the data's simulators, offline metrics.
  c.eval = ml_collections.ConfigDict()
  c.eval.tasks = ""  # comma-separated control tasks; empty = every control task of the mixture
  c.eval.episodes_per_task = 50  # the paper's 50 rollouts per task
  c.eval.max_steps = 0  # per episode; 0 = the task's own limit
  c.eval.greedy = False  # argmax instead of sampling the action tokens
  c.eval.temperature = 1.0  # sampling temperature when not greedy
  # Compute dtype of a loaded checkpoint when acting, serving or evaluating: auto = float32 on CPU (no
  # fast bfloat16 matmul there), config.model.dtype on TPU / GPU. Parameters are unchanged.
  c.eval.dtype = "auto"
  # Dtype of acting's calls of more than one position (observation chunks, window prefills, action
  # tokens of a batch; an action token at batch 1 stays in eval.dtype): auto = bfloat16 with float32
  # accumulation for a float32 model on a CPU with AMX (gato_79m's 41-token chunk 69 -> 42 ms), else
  # eval.dtype; "none" = always eval.dtype.
  c.eval.chunk_dtype = "auto"
  c.eval.seed = 0  # action sampling and prompt choice; env seeds: data_pipelines' evaluation range
  c.eval.num_envs = 10  # episodes of a task run side by side (one batched decode per step)
  c.eval.prompt = "demo"  # demo: a successful validation episode of the task first; none: no prompt
  c.eval.prompt_tokens = 0  # at most this many prompt tokens (its end, timestep-aligned); 0 = L / 2
  c.eval.roll_keep = 0.75  # when the window is full, keep prompt + latest steps within this share of L
  c.eval.context_length = 0  # rolling window L of the agent; 0 = data.sequence_length
  c.eval.confidence = 0.95  # level of the bootstrap interval of each task's score
  c.eval.bootstrap_samples = 2000
  c.eval.offline = True  # per-task loss / action accuracy on the validation split
  c.eval.offline_batch_size = 16
  c.eval.offline_batches = 8  # batches per task (0 = the whole split)
  c.eval.captions = 16  # captions to generate (greedy and at temperature 0.9); 0 disables
  c.eval.caption_temperature = 0.9
  c.eval.caption_max_tokens = 24
  c.eval.gif = True  # a GIF of one rollout per task
  c.eval.gif_max_frames = 60  # frames spread evenly over the episode
  c.eval.watch_interval_s = 30.0  # --watch: how often to look for a new checkpoint
  c.eval.watch_timeout_s = 0.0  # --watch: give up after this long without a new checkpoint; 0 = never
  # During training: warn when a task's validation loss rose at each of this many evaluations in a row
  # while the training loss fell (memorising); 0 disables.
  c.eval.memorising_patience = 3

  # The evaluators (big_vision style): name -> {type: offline | control | captions, every_steps, and any
  # config.eval key above, overriding it for this evaluator}. gato-eval runs every entry; training runs
  # those with every_steps != 0 (-1: at every checkpoint, so best_metric scores each saved step).
  # Validation is cheap and on; rollouts cost minutes per task (off during training: 0).
  c.evals = ml_collections.ConfigDict()
  c.evals.validation = ml_collections.ConfigDict({"type": "offline", "every_steps": -1})
  c.evals.rollouts = ml_collections.ConfigDict({"type": "control", "every_steps": 0})
  c.evals.captions = ml_collections.ConfigDict({"type": "captions", "every_steps": 0})
  return c
