"""BabyAI datasets: minigrid levels solved by the BabyAI bot; mission text, agent view, discrete actions."""

from data_pipelines.babyai.tasks import LEVELS, TASKS, make_task, render_view
