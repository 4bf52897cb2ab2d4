"""Training: optimizer and schedule, sharded train state, the jitted train step, and the loop."""

from gato_jax.training.loop import ConfigError, NonFiniteError, TrainResult, make_data_iterator, train
from gato_jax.training.optimizer import learning_rate_schedule, make_optimizer, weight_decay_mask
from gato_jax.training.state import (ModelDef, TrainState, abstract_model, abstract_train_state,
                                     create_train_state, state_shardings)
from gato_jax.training.step import gato_loss, jit_train_step, make_train_step
from gato_jax.training.synthetic import SyntheticIterator
