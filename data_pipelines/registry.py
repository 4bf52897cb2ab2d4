"""Every dataset gato-data can build, by name: its TFDS builder class, kind and (control) ControlTask.

`register_control_task(task)` is the one call that adds a user's own simulator + expert + TaskSpec:
it lists the task with gato_jax.envs (so gato-eval can act in it) and makes its TFDS builder here (so
`gato-data build --dataset=NAME` writes it). Training needs neither: the SeqIO tasks read each built
dataset's kind and TaskSpec from its own metadata in the data_dir.
"""

import dataclasses
from typing import Optional

from data_pipelines.control_builder import make_control_builder
from gato_jax.envs import registry as envs_registry
from gato_jax.envs.control import ControlTask

KINDS = ("control", "text", "captions")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  name: str
  builder: type  # a tfds.core.GeneratorBasedBuilder subclass (a data_pipelines LocalBuilder)
  kind: str  # control | text | captions
  task: Optional[ControlTask] = None  # control datasets only
  default_episodes: int = 100  # train episodes (documents / pairs) when gato-data is not told
  description: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
    if (self.kind == "control") != (self.task is not None):
      raise ValueError(f"dataset {self.name!r}: a ControlTask is given exactly for control datasets")
    if self.builder.name != self.name:
      raise ValueError(f"dataset {self.name!r}: its builder is named {self.builder.name!r}")


DATASETS: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
  if entry.name in DATASETS:
    raise ValueError(f"dataset {entry.name!r} is already registered ({DATASETS[entry.name].description}); "
                     "choose another name")
  DATASETS[entry.name] = entry
  return entry


def register_control_task(task: ControlTask, *, default_episodes: int = 100,
                          version: str = "1.0.0") -> DatasetEntry:
  """Registers a control dataset made by `task`'s expert; returns its entry (entry.builder is the TFDS
  builder class, named `task.name`)."""
  if task.name in DATASETS:
    raise ValueError(f"dataset {task.name!r} is already registered; choose another ControlTask name")
  if envs_registry.TASKS.get(task.name) is not task:
    envs_registry.register(task, default_episodes=default_episodes)
  builder = make_control_builder(task, version=version)
  return register(DatasetEntry(task.name, builder, "control", task, default_episodes,
                               task.description))


def get(name: str) -> DatasetEntry:
  if name not in DATASETS:
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
  return DATASETS[name]


def unregister(name: str) -> None:
  """Forgets a user's dataset and its control task (tests add and remove their own)."""
  DATASETS.pop(name, None)
  envs_registry.unregister(name)


def _register_builtins():
  # Imported here, not at the top: each source module only defines its tasks / builders.
  from data_pipelines import captions, text
  for name in envs_registry.names():
    register_control_task(envs_registry.get(name), default_episodes=envs_registry.default_episodes(name))
  register(DatasetEntry("text", text.TextBuilder, "text", default_episodes=0,
                        description=text.TextBuilder.DESCRIPTION))
  register(DatasetEntry("captions", captions.CaptionsBuilder, "captions", default_episodes=2000,
                        description=captions.CaptionsBuilder.DESCRIPTION))


_register_builtins()
