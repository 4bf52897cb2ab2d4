"""Gato's embedding function: one token table, the patch ResNet, and the local / patch position codes.

Per position (features of gato_jax/features.py, kinds from gato_jax.tokenizers.TokenKind):
  IMAGE           patch ResNet(pixels) + row table[r] + column table[c] + observation table[obs_position]
  OBS_TEXT / OBS_DISCRETE / OBS_CONTINUOUS
                  token table[id] + observation table[obs_position]
  ACTION          token table[id] + the one learned action-position vector
  TEXT, SEPARATOR token table[id]
  PAD             zeros
plus, with `position_embedding="learned"` (off in the paper), global table[absolute position].

Patch positions: features carry each patch's row and column interval [start, end) (end exclusive,
quantised to `num_patch_positions`, gato_jax.tokenizers.patch_intervals). Training samples the table
index uniformly from the integers start .. end-1; evaluation uses their mean rounded half up,
round((start + end - 1) / 2) computed exactly as (start + end) // 2, which always lies in [start, end).

Ids past the end of a table (token, observation position, patch position) give NaN embeddings
(jnp.take's fill mode): bad data is loud, never silently clipped to the last row.

Scale: every table and the patch projection start at std 1/sqrt(width) and the sum is multiplied by
sqrt(width) (Gemma's convention), so the residual stream starts at unit scale while the tied output
layer h @ table.T starts at unit-scale logits.
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gato_jax.features import INPUT_FEATURES, feature_shapes
from gato_jax.model import logical as lg
from gato_jax.model.options import ModelOptions
from gato_jax.tokenizers.layout import TokenKind



def check_features(features, options: ModelOptions, where: str = "model inputs") -> tuple[int, int]:
  """Checks the model's input features against the config; returns (batch, length).

  Raises ValueError naming the feature, what it is and what the config expects. Shapes are static,
  so this runs at trace time and costs nothing in the compiled step.
  """
  missing = [name for name in INPUT_FEATURES if name not in features]
  if missing:
    raise ValueError(f"{where}: missing features {missing}; the model reads {list(INPUT_FEATURES)} "
                     "(gato_jax/features.py)")
  tokens = features["tokens"]
  if tokens.ndim != 2:
    raise ValueError(f"{where}: feature 'tokens' has shape {tuple(tokens.shape)}, expected "
                     "(batch, length)")
  batch, length = tokens.shape
  p = options.patch_size
  shapes = feature_shapes(length, p)
  for name in INPUT_FEATURES:
    shape = (batch,) + shapes[name]
    got = tuple(features[name].shape)
    if got != shape:
      hint = (f" ({p}x{p}-pixel patches: episodes.PATCH_SIZE)" if name == "patches" else "")
      raise ValueError(f"{where}: feature {name!r} has shape {got}, expected {shape}{hint}")
    dtype = jnp.dtype(features[name].dtype)
    if name == "patches" and dtype != jnp.uint8:
      raise ValueError(f"{where}: feature 'patches' has dtype {dtype}, expected uint8 pixels "
                       "(they are normalised on the device)")
    if name != "patches" and not jnp.issubdtype(dtype, jnp.integer):
      raise ValueError(f"{where}: feature {name!r} has dtype {dtype}, expected an integer type")
  if options.position_embedding == "learned" and length > options.max_length:
    raise ValueError(f"{where}: sequence length {length} exceeds config.model.max_length="
                     f"{options.max_length}, the size of the learned position table")
  return batch, length


def patch_position_index(interval, rng=None):
  """Table index of a patch position from its interval int[..., 2] = [start, end).

  With `rng` (training): uniform over start .. end-1. Without (evaluation): (start + end) // 2, the
  mean of those integers rounded half up. Empty intervals (end <= start, e.g. non-image positions)
  give start.
  """
  start, end = interval[..., 0], interval[..., 1]
  end = jnp.maximum(end, start + 1)
  if rng is None:
    return (start + end) // 2
  return jax.random.randint(rng, start.shape, start, end, dtype=start.dtype)


def _table_init(width):
  return nnx.initializers.normal(stddev=1.0 / math.sqrt(width))


class PatchEncoder(nnx.Module):
  """A uint8 patch [P, P, 3] -> one width-E vector.

  Pixels become (x / 255 * 2 - 1) / 4 on the device; a strided stem convolution (kernel = stride =
  `patch_stem_stride`) maps them to `patch_channels` channels; one pre-activation ResNet v2 block
  (GroupNorm(resnet_groups) -> GELU -> 3x3 conv, twice, plus the identity); ResNet v2's closing
  GroupNorm -> GELU; then a linear projection of the flattened map to the model width.
  """

  def __init__(self, options: ModelOptions, *, rngs: nnx.Rngs):
    o = options
    c, s = o.patch_channels, o.patch_stem_stride
    self.patch_size = o.patch_size
    self.dtype = o.compute_dtype
    dtypes = dict(dtype=o.compute_dtype, param_dtype=o.weight_dtype)
    conv = functools.partial(nnx.Conv, use_bias=True, rngs=rngs, **dtypes,
                             kernel_init=nnx.initializers.he_normal(),
                             kernel_metadata=lg.axes(None, None, lg.CONV_IN, lg.CONV_OUT),
                             bias_metadata=lg.axes(lg.CONV_OUT))
    norm = functools.partial(nnx.GroupNorm, c, num_groups=o.resnet_groups, rngs=rngs, **dtypes,
                             scale_metadata=lg.axes(None), bias_metadata=lg.axes(None))
    self.stem = conv(3, c, kernel_size=(s, s), strides=(s, s), padding="VALID")
    self.norm1, self.conv1 = norm(), conv(c, c, kernel_size=(3, 3), padding="SAME")
    self.norm2, self.conv2 = norm(), conv(c, c, kernel_size=(3, 3), padding="SAME")
    self.norm_out = norm()
    features = (o.patch_size // s) ** 2 * c
    # Output std ~ 1/sqrt(width), like the tables it is summed with (see the module docstring).
    self.projection = nnx.Linear(
        features, o.embed_dim, use_bias=True, rngs=rngs, **dtypes,
        kernel_init=nnx.initializers.variance_scaling(1.0 / o.embed_dim, "fan_in", "normal"),
        kernel_metadata=lg.axes(lg.PATCH_FEATURES, lg.EMBED), bias_metadata=lg.axes(lg.EMBED))

  def __call__(self, patches):
    lead = patches.shape[:-3]
    p = self.patch_size
    x = patches.reshape((-1, p, p, 3)).astype(self.dtype)
    x = (x * (2.0 / 255.0) - 1.0) / 4.0  # [-1, 1] / sqrt(16), the paper's normalisation
    x = self.stem(x)
    h = self.conv1(jax.nn.gelu(self.norm1(x)))
    h = self.conv2(jax.nn.gelu(self.norm2(h)))
    x = jax.nn.gelu(self.norm_out(x + h))
    return self.projection(x.reshape((x.shape[0], -1))).reshape(lead + (-1,))


class EmbeddingFunction(nnx.Module):
  """Features of a sequence -> width-E input vectors of the sequence model (module docstring)."""

  def __init__(self, options: ModelOptions, vocab_size: int, *, rngs: nnx.Rngs):
    o = options
    self.embed_dim = o.embed_dim
    self.dtype = o.compute_dtype
    self.max_image_tokens = o.max_image_tokens
    init = _table_init(o.embed_dim)
    table = functools.partial(nnx.Embed, features=o.embed_dim, dtype=o.compute_dtype,
                              param_dtype=o.weight_dtype, embedding_init=init, rngs=rngs)
    positions = lg.axes(lg.POSITIONS, lg.EMBED)
    self.token_table = table(vocab_size, embedding_metadata=lg.axes(lg.VOCAB, lg.EMBED))
    self.patch_encoder = PatchEncoder(o, rngs=rngs)
    self.obs_position_table = table(o.max_obs_positions, embedding_metadata=positions)
    self.action_position = nnx.Param(init(rngs.params(), (o.embed_dim,), o.weight_dtype),
                                     **lg.axes(lg.EMBED))
    self.patch_row_table = table(o.num_patch_positions, embedding_metadata=positions)
    self.patch_col_table = table(o.num_patch_positions, embedding_metadata=positions)
    self.global_position_table = (table(o.max_length, embedding_metadata=positions)
                                  if o.position_embedding == "learned" else None)

  def __call__(self, features, *, positions, rng=None, images: bool = True):
    """Returns [B, L, E] in the compute dtype.

    Args:
      features: the model features (check_features has been run by the caller).
      positions: int [B, L] absolute positions, used only by learned global positions.
      rng: a key when training (samples patch positions); None when evaluating / acting.
      images: False when the caller knows the features hold no IMAGE token (acting's action tokens,
        an image-free task): the patch ResNet and the patch position tables are not run (a 41-token
        chunk of 79M spent ~3 ms of ~45 in the ResNet). Image positions are then NaN, never zero.
    """
    kinds = features["kinds"]
    is_image = (kinds == TokenKind.IMAGE)[..., None]
    is_obs = jnp.isin(kinds, jnp.asarray(TokenKind.observation_kinds()))[..., None]
    is_action = (kinds == TokenKind.ACTION)[..., None]
    if images:
      row_rng, col_rng = jax.random.split(rng) if rng is not None else (None, None)
      rows = patch_position_index(features["patch_rows"], row_rng)
      cols = patch_position_index(features["patch_cols"], col_rng)
      image = self._encode_patches(features["patches"], is_image[..., 0])
      image += self._lookup(self.patch_row_table, rows) + self._lookup(self.patch_col_table, cols)
    else:
      image = jnp.nan
    x = jnp.where(is_image, image, self._lookup(self.token_table, features["tokens"]))
    x += jnp.where(is_obs, self._lookup(self.obs_position_table, features["obs_positions"]), 0)
    x += jnp.where(is_action, self.action_position[...].astype(self.dtype), 0)
    if self.global_position_table is not None:
      x += self._lookup(self.global_position_table, positions)
    x = jnp.where((kinds == TokenKind.PAD)[..., None], 0, x) * math.sqrt(self.embed_dim)
    return lg.constrain(x.astype(self.dtype), lg.ACTIVATION)

  def _lookup(self, table: nnx.Embed, ids):
    """Rows `ids` of `table` in the compute dtype. nnx.Embed casts the whole table before gathering:
    with bfloat16 compute a 1-token decode step then read and wrote the 34k-row table each call
    (79M: 45 ms of a 1-token embedding on CPU, 1 ms gathering first)."""
    return jnp.take(table.embedding[...], ids, axis=0).astype(self.dtype)

  def _encode_patches(self, patches, is_image):
    """Patch ResNet output at image positions, [B, L, E] (other positions are dropped by the caller).

    `max_image_tokens` decides the static work: -1 runs the ResNet at every position (no gather; a
    lax.cond skipping image-free batches made XLA:CPU's backward pass 4x slower); K > 0 gathers the
    first K image positions of each sequence, encodes them and scatters back; 0 runs no encoder.
    Image positions left unencoded are NaN: loud, never silently zero.
    """
    k = self.max_image_tokens
    batch, length = is_image.shape
    if k < 0 or k >= length:
      return self.patch_encoder(patches)
    nan = jnp.full((batch, length, self.embed_dim), jnp.nan, self.dtype)
    if k == 0:
      return nan
    index = jax.vmap(lambda m: jnp.nonzero(m, size=k, fill_value=length)[0])(is_image)  # [B, K]
    gathered = jnp.take_along_axis(patches, jnp.minimum(index, length - 1)[..., None, None, None], axis=1)
    encoded = self.patch_encoder(gathered).astype(self.dtype)  # [B, K, E]
    rows = jnp.arange(batch)[:, None]
    return nan.at[rows, index].set(encoded, mode="drop")  # fill index == length is dropped

  def attend(self, h, vocab: tuple[int, int] | None = None):
    """Tied output layer: logits h @ token_table.T in float32, [..., E] -> [..., vocab] (with vocab=(start,
    size): the rows start .. start + size - 1 only)."""
    table = self.token_table.embedding[...]
    if vocab is not None:
      table = jax.lax.slice_in_dim(table, vocab[0], vocab[0] + vocab[1], axis=0)
    return jnp.einsum("...e,ve->...v", h, table.astype(h.dtype), preferred_element_type=jnp.float32)
