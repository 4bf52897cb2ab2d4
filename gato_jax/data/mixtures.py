"""Task mixtures with rates: the defaults (control_demo, gato_local), user mixtures, and their checks.

    from gato_jax.data import mixtures
    mixtures.register_mixture("my_mix", {"cartpole": 1.0, "my_robot": 3.0})
    # or in a config: c.data.mixture = "cartpole:1,my_robot:3"

A mixture is a seqio.Mixture of Task objects (`make_mixture`; `gato_jax.data.pipeline.make_mixture`
makes the one config.data.mixture names): neither its tasks nor itself go to seqio's process-wide
registries, so runs with other data_dirs or options in one process never see each other's.
Each example of a mixture carries `task_index`: the position of its task in `mixture.tasks`
(seqio orders them by name; `task_names(mixture)` lists them).
- control_demo: what the CPU demo trains on: CartPole, BabyAI GoToRedBall, Meta-World reach at 2:2:1.
- gato_local: every dataset of the data_dir; the paper's shares by kind (85% control split evenly over
  the control tasks, 10% text, 5% captions), renormalised over the kinds present.
- <domain>_all (babyai_all, metaworld_all, ...): the control tasks of one domain, equal rates.
"""

from typing import Iterable, Mapping, Optional
import zlib

import numpy as np
import seqio
import tensorflow as tf

from gato_jax.data import sources
from gato_jax.episodes import PATCH_SIZE
from gato_jax.data.sources import DatasetRef

# CartPole and BabyAI get twice Meta-World reach's share: CartPole's bang-bang LQR expert turns on small
# differences of four numbers and BabyAI has ~4 action targets per 256-token sequence (CartPole ~42,
# reach ~23). At equal rates CartPole fell short of its target on one seed of three, and at 2:1:1 BabyAI
# did, while reach kept its margin on every seed at a quarter of the data (bench/results/demo_seeds*.md).
CONTROL_DEMO = {"cartpole": 2.0, "babyai_gotoredball": 2.0, "metaworld_reach": 1.0}
KIND_SHARES = {"control": 0.85, "text": 0.10, "captions": 0.05}


def stream_seed(seed: int, *parts) -> int:
  """A seed derived from `seed` and `parts` (ints or strings), stable across runs and machines."""
  words = [int(seed)] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
  return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1))


class GatoMixture(seqio.Mixture):
  """A seqio.Mixture whose examples carry `task_index` (the task's position in `self.tasks`) and whose
  tasks draw independent windows, prompts and shuffles: each reads with its own seed derived from the
  mixture's seed and the task name."""

  def get_task_dataset(self, task, output_feature_keys, sequence_length=None, split="train",
                       use_cached=False, shuffle=True, seed=None, shard_info=None, num_epochs=None,
                       trim_output_features=True, try_in_mem_cache=True) -> tf.data.Dataset:
    ds = super().get_task_dataset(task, output_feature_keys, sequence_length, split, use_cached, shuffle,
                                  None if seed is None else stream_seed(seed, task.name), shard_info,
                                  num_epochs, trim_output_features, try_in_mem_cache)
    index = task_names(self).index(task.name)
    add_index = tf.autograph.experimental.do_not_convert(
        lambda ex: {**ex, "task_index": tf.constant(index, tf.int32)})
    return ds.map(add_index, num_parallel_calls=tf.data.AUTOTUNE)


def task_names(mixture: seqio.Mixture) -> list[str]:
  """The mixture's task names in `task_index` order."""
  return [t.name for t in mixture.tasks]


def check_rates(name: str, rates: Mapping[str, float], known: Iterable[str]) -> dict[str, float]:
  """Refuses unknown tasks (not among `known`, the data_dir's datasets) and rates <= 0, naming them."""
  if not rates:
    raise ValueError(f"mixture {name!r} names no tasks")
  known = set(known)
  unknown = sorted(t for t in rates if t not in known)
  if unknown:
    raise ValueError(f"mixture {name!r} names unknown task(s) {unknown}; the data_dir's datasets: "
                     f"{sorted(known) if len(known) < 60 else f'{len(known)} datasets'} (one task per dataset "
                     "in config.data.data_dir: build or import the missing ones with gato-data)")
  check_positive(name, rates)
  return {t: float(r) for t, r in rates.items()}


def check_positive(name: str, rates: Mapping[str, float]) -> None:
  bad = {t: r for t, r in rates.items() if not (isinstance(r, (int, float)) and r > 0)}
  if bad:
    raise ValueError(f"mixture {name!r}: rates must be numbers > 0, got {bad}")


_NAMED: dict[str, dict[str, float]] = {}  # the mixtures a user named with register_mixture: name -> rates


def register_mixture(name: str, rates: Mapping[str, float]) -> dict[str, float]:
  """Names a mixture of datasets with relative rates, so that config.data.mixture may say `name`.

  Only the rates are kept: the mixture is made from the run's own Task objects (`make_mixture`), and
  its tasks are checked against the data_dir then. A name given again replaces the earlier rates.
  """
  if not rates:
    raise ValueError(f"mixture {name!r} names no tasks")
  check_positive(name, rates)
  _NAMED[name] = {t: float(r) for t, r in rates.items()}
  return dict(_NAMED[name])


def default_mixture_rates(datasets: Iterable[DatasetRef]) -> dict[str, dict[str, float]]:
  """{mixture name: {task: rate}} of the default mixtures over `datasets`."""
  datasets = list(datasets)
  by_kind: dict[str, list[str]] = {}
  for ref in datasets:
    by_kind.setdefault(ref.kind, []).append(ref.name)
  gato_local = {}
  for kind, names in by_kind.items():
    for n in names:
      gato_local[n] = KIND_SHARES[kind] / len(names)
  by_domain: dict[str, dict[str, float]] = {}
  for ref in datasets:
    if ref.kind == "control" and ref.domain:
      by_domain.setdefault(f"{ref.domain}_all", {})[ref.name] = 1.0
  return {"control_demo": dict(CONTROL_DEMO), "gato_local": gato_local, **by_domain}


def parse_mixture(spec: str) -> dict[str, float]:
  """'task:rate,task:rate' (a bare task name has rate 1) -> {task: rate}."""
  rates = {}
  for part in spec.split(","):
    part = part.strip()
    if not part:
      continue
    name, _, rate = part.partition(":")
    try:
      rates[name.strip()] = float(rate) if rate else 1.0
    except ValueError:
      raise ValueError(f"mixture {spec!r}: rate {rate!r} of task {name!r} is not a number") from None
  return rates


def make_mixture(spec: str, tasks: Mapping[str, seqio.Task], datasets: Iterable[DatasetRef]) -> GatoMixture:
  """The GatoMixture `spec` names, made of the Task objects `tasks` (one per dataset of `datasets`, the
  data_dir's); nothing is registered. `spec` is, in this order: a name given to register_mixture, a
  default mixture (control_demo, gato_local, <domain>_all), a mixture a user registered with seqio
  itself, or an inline 'task:rate,...' mixture (a bare dataset name: that task alone)."""
  defaults = default_mixture_rates(datasets)
  if spec in _NAMED or spec in defaults:
    rates = check_rates(spec, _NAMED.get(spec, defaults.get(spec)), tasks)
  elif spec in seqio.MixtureRegistry.names():  # registered with plain seqio: its own tasks and rates
    mixture = seqio.MixtureRegistry.get(spec)
    return GatoMixture(mixture.name, [(t, mixture.get_rate(t)) for t in mixture.tasks])
  elif ":" in spec or "," in spec or spec in tasks:
    rates = check_rates(spec, parse_mixture(spec), tasks)
  else:
    known = sorted(set(_NAMED) | set(defaults))
    raise ValueError(f"unknown mixture {spec!r}: known mixtures {known}; or give 'task:rate,task:rate' "
                     "with dataset names of the data_dir")
  return GatoMixture(spec, [(tasks[t], r) for t, r in rates.items()])


def min_timestep_tokens(ref_spec) -> int:
  """Fewest tokens one timestep of a TaskSpec can have (text fields counted as 0)."""
  obs = sum(f.size for _, f in ref_spec.observation_fields())
  return obs + 1 + ref_spec.action.size


def check_sequence_length(mixture_name: str, names: Iterable[str], length: int,
                          datasets: Mapping[str, DatasetRef], data_dir: Optional[str] = None) -> None:
  """Refuses a sequence length L whose window (L + 1 tokens) cannot hold one timestep of a control
  task, or one image of a captions task, naming the task."""
  for name in names:
    ref = datasets.get(name)
    if ref is None or ref.kind == "text":
      continue
    if ref.kind == "control":
      spec = ref.spec if ref.spec is not None else sources.read_task_spec(name, data_dir)
      need = min_timestep_tokens(spec)
      what = f"one timestep ({need} tokens: observation, separator, {spec.action.size} action tokens)"
    else:
      if data_dir is None or not sources.dataset_exists(name, data_dir):
        continue
      shape = sources.read_builder(name, data_dir).info.features["image"].shape
      if shape[0] is None or shape[1] is None:
        continue
      need = (shape[0] // PATCH_SIZE) * (shape[1] // PATCH_SIZE) + 1
      what = f"one image and a caption token ({need} tokens)"
    if length + 1 < need:
      raise ValueError(f"mixture {mixture_name!r}: sequence length {length} is too short for {what} "
                       f"of task {name!r}; raise config.data.sequence_length to at least {need - 1}")


def check_image_tokens(mixture_name: str, names: Iterable[str], max_image_tokens: int,
                       datasets: Mapping[str, DatasetRef], data_dir: Optional[str] = None) -> None:
  """Refuses a model that encodes fewer image patches per sequence (config.model.max_image_tokens; 0:
  none, -1: all) than one timestep of a task holds: the positions it leaves unencoded are NaN, and
  training would stop at its first step with a NaN loss instead of naming the cause."""
  if max_image_tokens < 0:
    return
  for name in names:
    ref = datasets.get(name)
    if ref is None or ref.kind != "control":
      continue
    spec = ref.spec if ref.spec is not None else sources.read_task_spec(name, data_dir)
    images = {p: f.size for p, f in spec.observation_fields() if f.modality == "image"}
    if sum(images.values()) > max_image_tokens:
      fields = ", ".join(f"observation/{p} ({n} patches)" for p, n in sorted(images.items()))
      raise ValueError(f"mixture {mixture_name!r}: task {name!r} has images ({fields}) but "
                       f"config.model.max_image_tokens={max_image_tokens} encodes "
                       f"{'none' if max_image_tokens == 0 else f'only {max_image_tokens} per sequence'}; "
                       f"set --config.model.max_image_tokens=-1 (every image position) or at least "
                       f"{sum(images.values())}")
