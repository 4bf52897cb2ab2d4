"""`config.model` read once into a frozen, hashable dataclass (NNX keeps it as static graph data),
which keys of a saved config must match for a checkpoint's parameters to fit (`config_mismatches`),
and the compute dtype a loaded checkpoint acts in (`for_inference`)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gato_jax.episodes import PATCH_SIZE
from gato_jax.model import attention
from gato_jax.model.value_init import CONTINUOUS_INITS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
NORMS = ("layer_norm", "rms_norm")
POSITION_EMBEDDINGS = ("none", "learned")
ATTENTION_IMPLS = attention.IMPLS
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_POSITIVE_INTS = ("num_layers", "num_heads", "head_dim", "embed_dim", "mlp_dim", "max_obs_positions",
                  "num_patch_positions", "resnet_groups", "patch_channels",
                  "patch_stem_stride", "max_length")
# Model keys that change how the model runs or was initialised, not the parameters it has: they may
# differ between the config that trained a checkpoint and the one that evaluates or fine-tunes it.
RUNTIME_MODEL_KEYS = ("dropout_rate", "scan_layers", "remat_policy", "dtype", "attention_impl",
                      "max_image_tokens", "continuous_init")



def require(ok: bool, section: str, key: str, value, expected: str, error=ValueError) -> None:
  """One line naming the config key, its value and what was expected, for the typed config views."""
  if not ok:
    raise error(f"{section}.{key}={value!r}; expected {expected}")

@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """Every `config.model` value the modules use; field names are the config keys."""
  num_layers: int
  num_heads: int
  head_dim: int
  embed_dim: int
  mlp_dim: int
  dropout_rate: float
  tie_embeddings: bool
  max_obs_positions: int
  num_patch_positions: int
  resnet_groups: int
  patch_channels: int
  patch_stem_stride: int
  max_image_tokens: int
  position_embedding: str
  max_length: int
  norm_type: str
  scan_layers: bool
  remat_policy: str
  attention_impl: str
  fused_projections: bool
  dtype: str
  param_dtype: str
  continuous_init: str

  def __post_init__(self):
    need = lambda ok, key, expected: require(ok, "config.model", key, getattr(self, key), expected)
    for key in _POSITIVE_INTS:
      value = getattr(self, key)
      need(isinstance(value, int) and not isinstance(value, bool) and value > 0, key, "a positive int")
    need(0.0 <= self.dropout_rate < 1.0, "dropout_rate", "a rate in [0, 1)")
    need(isinstance(self.max_image_tokens, int) and self.max_image_tokens >= -1, "max_image_tokens",
         "-1 (encode every position), 0 (no images) or a positive count per sequence")
    need(self.norm_type in NORMS, "norm_type", f"one of {NORMS}")
    need(self.position_embedding in POSITION_EMBEDDINGS, "position_embedding",
         f"one of {POSITION_EMBEDDINGS}")
    need(self.remat_policy in REMAT_POLICIES, "remat_policy", f"one of {tuple(REMAT_POLICIES)}")
    need(self.attention_impl in ATTENTION_IMPLS, "attention_impl", f"one of {ATTENTION_IMPLS}")
    need(self.dtype in DTYPES, "dtype", f"one of {tuple(DTYPES)}")
    need(self.param_dtype in DTYPES, "param_dtype", f"one of {tuple(DTYPES)}")
    need(self.continuous_init in CONTINUOUS_INITS, "continuous_init", f"one of {CONTINUOUS_INITS}")
    need(self.patch_channels % self.resnet_groups == 0, "patch_channels",
         f"a multiple of resnet_groups={self.resnet_groups} (GroupNorm splits channels into groups)")
    need(self.patch_size % self.patch_stem_stride == 0, "patch_stem_stride",
         f"a divisor of patch_size={self.patch_size}")

  @classmethod
  def from_config(cls, config) -> "ModelOptions":
    """From `config.model` (a ConfigDict or mapping); names any missing or unknown key."""
    values = dict(config)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in values]
    if missing:
      raise ValueError(f"config.model is missing {missing} (see experiments/base.py for defaults)")
    unknown = sorted(set(values) - set(names))
    if unknown:
      raise ValueError(f"config.model has unknown keys {unknown}; known keys: {names}")
    return cls(**{n: values[n] for n in names})

  @property
  def patch_size(self) -> int:
    """Pixels per patch side: the episode schema's (episodes.PATCH_SIZE), not a model choice, since
    one patch is one token of the data."""
    return PATCH_SIZE

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]


def config_mismatches(trained: dict, config) -> list[str]:
  """'section.key: trained X, requested Y' for every parameter-shaping key that differs."""
  out = []
  for section in ("model", "vocab"):
    saved = trained.get(section, {})
    for key, value in dict(config[section]).items():
      if (section == "model" and key in RUNTIME_MODEL_KEYS) or (section == "vocab" and key == "sentencepiece_model"):
        continue
      if section == "model" and key == "max_length" and config.model.position_embedding == "none":
        continue  # only the KV cache's default size then
      if key in saved and saved[key] != value:
        out.append(f"{section}.{key}: trained {saved[key]!r}, requested {value!r}")
  return out


def inference_dtype(config, backend: str | None = None) -> str:
  """config.eval.dtype resolved: "auto" is float32 on CPU (XLA:CPU has no fast bfloat16 matmul: the
  79M preset's 1-token decode took 288 ms in bfloat16, 161 ms in float32, on this 2-core host) and
  the model's own dtype elsewhere; any other value is used as given."""
  requested = str(config.get("eval", {}).get("dtype", "auto"))
  if requested == "auto":
    return "float32" if (backend or jax.default_backend()) == "cpu" else str(config.model.dtype)
  if requested not in DTYPES:
    raise ValueError(f"config.eval.dtype={requested!r}: expected auto or one of {sorted(DTYPES)}")
  return requested


def for_inference(config, backend: str | None = None):
  """A copy of `config` whose model computes in `inference_dtype` (the parameters are unchanged:
  dtype is a runtime key, RUNTIME_MODEL_KEYS)."""
  config = config.copy_and_resolve_references()
  config.model.dtype = inference_dtype(config, backend)
  return config


@functools.cache
def host_has_amx() -> bool:
  """Whether this host's CPU has AMX bfloat16 tiles (Linux /proc/cpuinfo; False where unreadable)."""
  try:
    with open("/proc/cpuinfo") as f:
      return any(line.startswith("flags") and " amx_bf16" in line for line in f)
  except OSError:
    return False


def chunk_dtype(config, backend: str | None = None) -> str | None:
  """config.eval.chunk_dtype resolved to the dtype acting's calls of more than one position multiply in
  (observation chunks, prefills, the action tokens of a batch), or None for the inference dtype
  itself (acting/decode.py's Weights).

  "auto" is bfloat16 (with float32 accumulation) when a float32 model acts on a CPU with AMX: there a
  41-position gato_79m chunk took 42 ms against 69 in float32 (an action token at batch 1, one
  position, stays float32, where bfloat16 was 10x slower); elsewhere None. Any dtype name is used as
  given (costing a second copy of the layer matrices); "none" turns it off."""
  requested = str(config.get("eval", {}).get("chunk_dtype", "auto"))
  if requested == "none":
    return None
  if requested == "auto":
    cpu = (backend or jax.default_backend()) == "cpu"
    use = cpu and inference_dtype(config, backend) == "float32" and host_has_amx()
    return "bfloat16" if use else None
  if requested not in DTYPES:
    raise ValueError(f"config.eval.chunk_dtype={requested!r}: expected auto, none or one of {sorted(DTYPES)}")
  return requested
