"""Meta-World datasets: v3 manipulation tasks solved by metaworld's scripted policies (successes only)."""

from data_pipelines.metaworld.tasks import EPISODE_STEPS, TASK_POLICIES, TASKS, make_task
