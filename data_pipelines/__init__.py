"""Datasets made locally by simulators + scripted experts, text and rendered captions (TFDS builders).

`DATASETS` lists every dataset by name; `register_control_task(ControlTask(...))` adds a user's own;
`build(name, data_dir, ...)` (or `gato-data build`) writes one. See data_pipelines/README.md.
"""

from data_pipelines.building import (BuildReport, DatasetExistsError, build, build_sentencepiece,
                                     is_built, make_builder)
from data_pipelines.registry import DATASETS, DatasetEntry, get, register_control_task, unregister
# The simulators' side, re-exported so a user's task file needs one import (README "add a task").
from gato_jax.envs.control import (ControlTask, episode_seed, generate_episodes, random_policy,
                                   run_episode)
