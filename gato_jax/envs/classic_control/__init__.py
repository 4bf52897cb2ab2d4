"""Classic control datasets (gymnasium): CartPole, Pendulum, MountainCar, LunarLander with hand experts."""

from gato_jax.envs.classic_control.tasks import CARTPOLE, LUNARLANDER, MOUNTAINCAR, PENDULUM, TASKS
