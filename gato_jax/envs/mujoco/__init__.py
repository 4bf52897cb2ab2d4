"""MuJoCo datasets: gymnasium MuJoCo and dm_control suite bodies with controllers derived from the model."""

from gato_jax.envs.mujoco.tasks import TASKS
