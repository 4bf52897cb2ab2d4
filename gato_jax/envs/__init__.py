"""The simulators and scripted experts gato-jax records data from and evaluates in (TensorFlow-free).

`ControlTask` ties a simulator to its TaskSpec and expert; `registry` lists them by name (built-in
domains load on first use). TFDS builders live in the top-level `data_pipelines/`, which imports this
package; nothing here imports data_pipelines or TensorFlow.
"""

from gato_jax.envs.control import (ControlTask, SEED_OFFSETS, SEED_STRIDE, episode_seed, generate_episodes,
                                   random_policy, run_episode)
from gato_jax.envs.registry import domain_of, get, names, register
