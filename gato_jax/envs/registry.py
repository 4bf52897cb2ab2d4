"""Every control task gato-jax can roll out, by name: the simulators evaluation acts in and builders record.

The built-in domains (`DOMAINS`) are imported on first use, so a process that only trains from built
TFDS files never imports a simulator. `register(task)` adds a user's own task (data_pipelines'
`register_control_task` calls it); `get(name)` finds one for evaluation.
"""

import importlib
from typing import Iterator

from gato_jax.envs import recorded
from gato_jax.envs.control import ControlTask

# Each is a module gato_jax.envs.<domain> with TASKS = [(ControlTask, default train episodes), ...].
DOMAINS = ("classic_control", "babyai", "metaworld", "atari", "mujoco")

TASKS: dict[str, ControlTask] = {}
_DEFAULT_EPISODES: dict[str, int] = {}
_loaded = False


def builtin_tasks() -> Iterator[tuple[ControlTask, int]]:
  """(task, default train episodes) of every built-in domain (imports the simulators)."""
  for domain in DOMAINS:
    module = importlib.import_module(f"gato_jax.envs.{domain}")
    yield from module.TASKS


def _load_builtins() -> None:
  global _loaded
  if _loaded:
    return
  _loaded = True
  for task, default_episodes in builtin_tasks():
    if task.name not in TASKS:
      register(task, default_episodes=default_episodes)


def register(task: ControlTask, *, default_episodes: int = 100) -> ControlTask:
  """Adds `task` under its name; refuses a second task of the same name."""
  _load_builtins()
  if task.name in TASKS:
    raise ValueError(f"control task {task.name!r} is already registered; choose another ControlTask name")
  TASKS[task.name] = task
  _DEFAULT_EPISODES[task.name] = int(default_episodes)
  return task


def unregister(name: str) -> None:
  """Forgets a user's task (tests add and remove their own)."""
  TASKS.pop(name, None)
  _DEFAULT_EPISODES.pop(name, None)


def names() -> list[str]:
  _load_builtins()
  return sorted(TASKS)


def get(name: str) -> ControlTask:
  """The registered control task `name`, or a KeyError listing the known ones."""
  _load_builtins()
  if name not in TASKS:
    raise KeyError(f"unknown control task {name!r}; registered: {', '.join(sorted(TASKS))} (add your own "
                   "with data_pipelines.register_control_task, and pass --module_import=YOUR_MODULE to "
                   "the command that needs it)")
  return TASKS[name]


def default_episodes(name: str) -> int:
  _load_builtins()
  return _DEFAULT_EPISODES[name]


def domain_of(task: ControlTask) -> str:
  """The task's domain: ControlTask.domain, else the gato_jax.envs folder its simulator comes from,
  else 'custom'."""
  if task.domain:
    return task.domain
  fn = getattr(task.make_env, "func", task.make_env)
  parts = (getattr(fn, "__module__", "") or "").split(".")
  if len(parts) >= 3 and parts[:2] == ["gato_jax", "envs"]:
    return parts[2]
  return "custom"


def task_for_dataset(name: str, metadata: dict) -> ControlTask:
  """The ControlTask to act in for dataset `name`: the registered one, else the environment its
  importer recorded in the metadata (`recorded_env`, e.g. a Minari dataset's env spec)."""
  _load_builtins()
  if name in TASKS:
    return TASKS[name]
  if "recorded_env" in metadata:
    return recorded.task_from_metadata(name, metadata)
  return get(name)  # raises, listing the registered tasks
