"""Minari offline-RL datasets: convert a dataset of the local Minari root into a TFDS dataset whose
metadata records the environment it was recorded in, for gato-eval.

The mapping is inferred from the dataset's gymnasium spaces (a Box observation becomes the continuous
field `state`, Dict observations keep their keys, uint8 frames become images; Discrete / MultiDiscrete /
Box actions keep their space). Each Minari episode stores T + 1 observations for T actions; the final
observation is dropped. Minari's reference scores become the normalisation: `expert_return` =
ref_max_score, `random_return` = ref_min_score (metadata `score_reference` says so), so normalised
scores match published offline-RL numbers; without them, the imported episodes' mean return and
random-policy rollouts in the recorded environment stand in.
"""

import contextlib
import os
from typing import Any, Iterator, Optional

import numpy as np

from data_pipelines.importers import writer
from gato_jax.data.schema import episode_features
from gato_jax.map_numpy import map_steps
from gato_jax.mapping import EpisodeMapping, Leaf, get_path, gym_leaves, infer

ROOT = "observation"
RANDOM_EPISODES = 20


@contextlib.contextmanager
def minari_root(root: Optional[str]) -> Iterator[None]:
  """Points Minari at `root` (default: $MINARI_DATASETS_PATH or ~/.minari/datasets) while inside."""
  previous = os.environ.get("MINARI_DATASETS_PATH")
  if root:
    os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(os.path.expanduser(root))
  try:
    yield
  finally:
    if root:
      if previous is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
      else:
        os.environ["MINARI_DATASETS_PATH"] = previous


def load(dataset_id: str, root: Optional[str] = None):
  import minari  # pylint: disable=g-import-not-at-top
  with minari_root(root):
    local = minari.list_local_datasets()
    if dataset_id not in local:
      raise writer.ForeignDataError(f"Minari dataset {dataset_id!r} is not in the local Minari root "
                                    f"({os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}); "
                                    f"local datasets: {sorted(local)} (`minari download {dataset_id}`)")
    return minari.load_dataset(dataset_id)


def infer_mapping(dataset, overrides=None) -> EpisodeMapping:
  leaves = (gym_leaves(dataset.observation_space, ROOT) + gym_leaves(dataset.action_space, "action")
            + [Leaf("reward", "float32")])
  action = [l.path for l in leaves if l.path == "action" or l.path.startswith("action/")]
  mapping = infer(leaves, action, reward="reward", strip_prefix=ROOT + "/")
  if ROOT in mapping.observation:  # a flat Box observation: the state vector, as classic_control names it
    observation = {("state" if k == ROOT else k): v for k, v in mapping.observation.items()}
    mapping = EpisodeMapping(observation, mapping.action, mapping.reward, mapping.dropped, mapping.last_step)
  return mapping.with_overrides(overrides)


def inspect(dataset_id: str, overrides=None, name: str = "", root: Optional[str] = None) -> str:
  dataset = load(dataset_id, root)
  meta = dataset.storage.metadata
  head = (f"Minari {dataset_id}: {dataset.total_episodes} episodes, env {dataset.env_spec.id if dataset.env_spec else None}, "
          f"ref scores min {meta.get('ref_min_score')} max {meta.get('ref_max_score')}")
  return head + "\n" + infer_mapping(dataset, overrides).describe(name or dataset_id.replace("/", "_").replace("-", "_"))


def episode_steps(episode, mapping: EpisodeMapping) -> dict:
  """A Minari EpisodeData as mapped steps (the trailing observation dropped)."""
  length = len(episode.actions)
  tree = {ROOT: episode.observations, "action": episode.actions, "reward": episode.rewards}

  def get(path):
    value = get_path(tree, path)
    return value[:length] if path.split("/")[0] == ROOT else value
  steps = map_steps(mapping, get, length)
  steps.update(writer.episode_flags(length, bool(np.asarray(episode.terminations)[-1])))
  return steps


def _evaluation_env_spec(dataset):
  """The dataset's evaluation environment spec (its recording env when it names none), or None."""
  if dataset.env_spec is None:
    return None
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "no eval env: using the recording env" is what we want
    env = dataset.recover_environment(eval_env=True)
  spec = env.spec
  env.close()
  return spec


def _random_return(name: str, metadata: dict, episodes: int) -> float:
  from gato_jax.envs import control, recorded  # pylint: disable=g-import-not-at-top
  task = recorded.task_from_metadata(name, metadata)  # the task's name must be its spec's: the dataset's
  returns = [e["episode_return"] for _, e in control.generate_episodes(task, episodes, 0, "returns", policy="random")]
  return float(np.mean(returns))


def import_minari(dataset_id: str, name: str, data_dir: str, mapping: Any = None, root: Optional[str] = None,
                  validation_fraction: float = 0.1, domain: str = "minari"):
  """Converts Minari dataset `dataset_id` into TFDS dataset `name` of `data_dir`; returns the builder."""
  dataset = load(dataset_id, root)
  episode_mapping = infer_mapping(dataset, mapping)
  spec = episode_mapping.task_spec(name)
  env_spec = _evaluation_env_spec(dataset)
  ids = [int(i) for i in dataset.episode_indices]
  if len(ids) < 2:
    raise writer.ForeignDataError(f"Minari {dataset_id}: {len(ids)} episode(s); need 2 (train and validation)")
  held = max(1, int(round(len(ids) * validation_fraction)))
  split_ids = {"train": ids[:-held], "validation": ids[-held:]}
  lengths, returns = [], []

  def examples(split):
    for index in split_ids[split]:
      episode = dataset[index]
      where = f"{index} (Minari episode id {episode.id})"
      try:
        steps = episode_steps(episode, episode_mapping)
      except (ValueError, KeyError, TypeError) as e:
        raise writer.ForeignDataError(f"dataset {name!r}, episode {where}: cannot map it: {e}") from None
      example = writer.control_example(name, where, steps, spec, index)
      lengths.append(len(steps["reward"]))
      returns.append(float(example["episode_return"]))
      yield example

  meta = dataset.storage.metadata
  recorded = {"env_spec": env_spec.to_json() if env_spec is not None else None, "observation_root": ROOT,
              "source": f"minari:{dataset_id}"}
  base = {"kind": "control", "domain": domain, "task_spec": spec.to_dict(), "mapping": episode_mapping.to_dict(),
          "minari_id": dataset_id, "max_steps": int((env_spec and env_spec.max_episode_steps) or 0)}
  if env_spec is not None:
    base["recorded_env"] = recorded

  def metadata():
    out = {**base, **writer.returns_metadata(returns)}
    out["max_steps"] = out["max_steps"] or int(max(lengths))
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
      out.update(expert_return=float(meta["ref_max_score"]), random_return=float(meta["ref_min_score"]),
                 score_reference="minari ref_min_score/ref_max_score")
    else:
      out.update(expert_return=out["dataset_return_mean"],
                 random_return=_random_return(name, out, RANDOM_EPISODES) if env_spec is not None else float("nan"),
                 score_reference=f"expert: mean return of the imported episodes; random: {RANDOM_EPISODES} "
                                 "random-policy episodes in the recorded env (the dataset has no reference scores)")
    return out
  return writer.write_dataset(name, data_dir, episode_features(spec),
                              {"train": lambda: examples("train"), "validation": lambda: examples("validation")},
                              metadata, f"Minari dataset {dataset_id}: {meta.get('description') or ''}".strip())
