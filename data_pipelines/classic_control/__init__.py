"""Classic control datasets (gymnasium): CartPole, Pendulum, MountainCar, LunarLander with hand experts."""

from data_pipelines.classic_control.tasks import CARTPOLE, LUNARLANDER, MOUNTAINCAR, PENDULUM, TASKS
