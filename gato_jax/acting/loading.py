"""A trained Gato for acting from a workdir, one checkpoint step directory, or exported params.

The model is rebuilt from the config it was trained with (the step's `config` item, else
`<workdir>/config.json`; exported params need `config=`), and its params are read onto one device or,
given a mesh, onto that mesh's shardings under the partitioning rules (any mesh the params fit). It
computes in config.eval.dtype (auto: float32 on CPU; model/options.py's `for_inference`).
"""

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from gato_jax import checkpointing, partitioning
from gato_jax.model import default_model_fn, definition, options
from gato_jax.tokenizers import VocabLayout


class LoadError(ValueError):
  """A checkpoint path or config that cannot give a model; the message is one line for the user."""


@dataclasses.dataclass
class Loaded:
  model: Any
  config: ml_collections.ConfigDict
  layout: VocabLayout
  path: str  # the params directory actually read


def resolve(path: str) -> tuple[str, Optional[dict]]:
  """(params directory, the config dict recorded with it or None) for a workdir, step dir or export."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise LoadError(f"checkpoint path {path} is not a directory (expected a workdir, a checkpoint step "
                    "directory or exported params)")
  workdir = None
  if os.path.isdir(os.path.join(path, "checkpoints")):
    workdir = path
    steps = checkpointing.committed_steps(os.path.join(path, "checkpoints"))
    if not steps:
      raise LoadError(f"workdir {path} has no committed checkpoint in {path}/checkpoints")
    path = os.path.join(path, "checkpoints", checkpointing.NAME_FORMAT.build_name(steps[-1]))
  elif os.path.isdir(os.path.join(path, checkpointing.STATE)):
    workdir = os.path.dirname(os.path.dirname(path))
  candidates = [os.path.join(path, checkpointing.CONFIG, "metadata"), os.path.join(path, "config.json")]
  if workdir:
    candidates.append(os.path.join(workdir, "config.json"))
  for candidate in candidates:
    if os.path.exists(candidate):
      with open(candidate) as f:
        return path, json.load(f)
  return path, None


def load(path: str, config=None, mesh: Optional[jax.sharding.Mesh] = None) -> Loaded:
  """The model of `path` (see the module docstring); `config` overrides the recorded one."""
  params_dir, recorded = resolve(path)
  config = config if config is not None else recorded
  if config is None:
    raise LoadError(f"no config found for {params_dir} (looked for its config item and config.json); "
                    "pass config= (the training's experiment config)")
  if not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(config)
  layout = VocabLayout.from_config(config.vocab)
  model_def, abstract_state = definition.abstract_model(default_model_fn(options.for_inference(config), layout))
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, model_def.abstract_params)
  else:
    shardings = partitioning.tree_shardings(model_def.abstract_params, model_def.param_axes, mesh,
                                            rules=partitioning.rules_from_config(config.mesh))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          model_def.abstract_params, shardings)
  try:
    params = checkpointing.load_params(params_dir, abstract)
  except Exception as e:  # pylint: disable=broad-except
    raise LoadError(f"params at {params_dir} do not fit the model of their config "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
  model_state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)
  return Loaded(model_def.merge(params, jax.random.key(0), model_state), config, layout, params_dir)
