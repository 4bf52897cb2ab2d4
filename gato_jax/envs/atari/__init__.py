"""Atari datasets: ALE games (ale-py) with experts that read the emulator's RAM; full or compact frames."""

from gato_jax.envs.reference_scores import HUMAN_RANDOM
from gato_jax.envs.atari.tasks import GAMES, MAX_STEPS, TASKS, compact_frame, full_frame, make_task
