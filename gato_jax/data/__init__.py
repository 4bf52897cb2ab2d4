"""The SeqIO side of the data: tasks per dataset, prompting and windows, mixtures, the per-process pipeline.

See pipeline.py for the training / evaluation entry points and tasks.py / mixtures.py for making tasks
and defining mixtures.
"""

from gato_jax.data.feature_converter import GatoFeatureConverter, task_feature_lengths
from gato_jax.data.mixtures import register_mixture, task_names
from gato_jax.data.pipeline import (make_dataset, make_eval_dataset, make_iterator, make_mixture,
                                    per_process_batch_size)
from gato_jax.data.sources import DatasetRef, discover_datasets
from gato_jax.data.tasks import PreprocessingOptions, make_task, make_tasks, register_all
from gato_jax.data.vocabulary import GatoVocabulary
