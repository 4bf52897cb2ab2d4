"""Meta-World datasets: v3 manipulation tasks solved by metaworld's scripted policies (successes only)."""

from gato_jax.envs.metaworld.tasks import (ENV_POLICIES, EPISODE_STEPS, TASK_POLICIES, TASKS, dataset_name,
                                          make_task)
