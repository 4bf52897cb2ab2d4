"""Logical axis names of the model's parameters and activations, and the one helper that constrains them.

Every parameter is created with `out_sharding=<tuple of logical names>` NNX metadata and
`eager_sharding=False`: the module never shards anything itself. Where a parameter lives is decided
outside, by ONE rules table (gato_jax/partitioning.py) mapping these names to mesh axes, applied as the
`out_shardings` of a jitted init and the in/out shardings of the train step.

Parameter names (a rules table should map each to a mesh axis, a tuple of them, or None for replicated):
  embed         the model width (every projection's input or output side)
  heads         attention heads
  kv            per-head width of queries, keys and values
  mlp           the GEGLU hidden width
  vocab         rows of the token table
  layers        the stacked-layer axis (always present: layers are stored stacked, see transformer.py)
  conv_in       input channels of the patch ResNet's convolutions (small: usually replicated)
  conv_out      output channels of the patch ResNet's convolutions (small: usually replicated)
  patch_features  the flattened ResNet output (H' * W' * channels) feeding the patch projection
  positions     rows of the position tables (observation, patch row / column, global positions)
Convolution kernels' spatial axes and norm parameters of the ResNet carry None (never sharded).

Activation names (and the KV cache's), kept apart from the parameter names so that the residual
stream's width and a weight's width get their mesh axes from separate rules, not from rule order:
  activation_batch, activation_length (sequence positions), activation_embed, activation_heads,
  activation_kv, activation_mlp, activation_vocab (the logits' columns)
"""

import flax.linen as nn

EMBED = "embed"
HEADS = "heads"
KV = "kv"
MLP = "mlp"
VOCAB = "vocab"
LAYERS = "layers"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
PATCH_FEATURES = "patch_features"
POSITIONS = "positions"
PARAM_NAMES = (EMBED, HEADS, KV, MLP, VOCAB, LAYERS, CONV_IN, CONV_OUT, PATCH_FEATURES, POSITIONS)

BATCH = "activation_batch"
LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"
ACTIVATION_NAMES = (BATCH, LENGTH, ACT_EMBED, ACT_HEADS, ACT_KV, ACT_MLP, ACT_VOCAB)

ALL_NAMES = PARAM_NAMES + ACTIVATION_NAMES

# Activation layouts used by the constraints below (and by the KV cache's specs).
ACTIVATION = (BATCH, LENGTH, ACT_EMBED)
ATTENTION_HEADS = (BATCH, LENGTH, ACT_HEADS, ACT_KV)
MLP_HIDDEN = (BATCH, LENGTH, ACT_MLP)
LOGITS = (BATCH, LENGTH, ACT_VOCAB)


def axes(*names):
  """NNX Variable metadata for a parameter with these logical axis names (one per dimension).

  Pass as `kernel_metadata=axes(...)` etc. to flax.nnx layers, or `**axes(...)` to nnx.Param.
  Eager sharding stays off so that building the model needs no mesh; the jitted init's out_shardings
  place the parameters instead (see gato_jax/model/__init__.py).
  """
  return {"out_sharding": tuple(names), "eager_sharding": False}


def constrain(x, names):
  """Constrains activation `x` to the mesh axes that the active rules give its logical `names`.

  A no-op unless both a rules table (`flax.linen.logical_axis_rules(rules)`) and a mesh
  (`jax.set_mesh(mesh)`) are active while the function is traced; names without a rule stay
  unsharded (flax's AXIS_IS_UNSHARDED fallback), as do names whose mesh axis an earlier dimension
  already took (rules are applied in priority order, as in t5x / MaxText).
  """
  return nn.with_logical_constraint(x, tuple(names))
