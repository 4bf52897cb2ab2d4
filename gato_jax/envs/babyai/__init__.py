"""BabyAI datasets: minigrid levels solved by the BabyAI bot; mission text, agent view, discrete actions."""

from gato_jax.envs.babyai.tasks import LEVEL_IDS, LEVELS, TASKS, UNSOLVED, dataset_name, make_task, render_view
