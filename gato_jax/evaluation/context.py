"""What the evaluators of one run share: the config read once, the vocabulary, the tasks and their
datasets, the text tokenizer."""

import copy
import os
from typing import Optional, Sequence

from gato_jax.data import sources
from gato_jax.data.vocabulary import sentencepiece_model_path
from gato_jax.evaluation import datasets
from gato_jax.evaluation.datasets import EvaluationError
from gato_jax.evaluation.options import EvalOptions, eval_specs
from gato_jax.evaluation.task_choice import can_roll_out, resolve_tasks
from gato_jax.tokenizers import TextTokenizer, VocabLayout


class EvalContext:
  """The config (`options`: config.eval, `specs`: config.evals), the tasks evaluated and, when
  `load_data`, their control datasets; imported datasets without a simulator (RLDS, JAT) are
  `offline_only` (validation metrics, no rollouts)."""

  def __init__(self, config, workdir: str, *, tasks: Optional[Sequence[str]] = None, load_data: bool = True,
               rollouts: bool = True):
    self.config, self.workdir = copy.deepcopy(config), os.path.abspath(os.path.expanduser(workdir))
    self.options = EvalOptions.from_config(config)
    self.specs = eval_specs(config)
    self.layout = VocabLayout.from_config(config.vocab)
    self.data_dir = os.path.expanduser(config.data.data_dir)
    self.task_names = list(tasks) if tasks is not None else resolve_tasks(config, self.options.tasks)
    # Names not in the data_dir are left to load_control_dataset's message.
    refs = sources.discover_datasets(self.data_dir) if load_data else {}
    self.offline_only = [n for n in self.task_names if n in refs and refs[n].kind == "control"
                         and not can_roll_out(n, refs[n], self.data_dir)]
    self.datasets = ({n: datasets.load_control_dataset(n, self.data_dir) for n in self.task_names
                      if n not in self.offline_only} if load_data and rollouts else {})
    self.captions_built = load_data and refs.get("captions") is not None and refs["captions"].kind == "captions"
    self._text_tokenizer = None
    # (task, demonstrations) -> rollout.Actor in place of the in-process agent: gato-eval --server, where
    # a served checkpoint acts (serving/remote.py) and there is no model here.
    self.actor_for = None
    specs = [d.spec for d in self.datasets.values()] + [refs[n].spec for n in self.offline_only]
    images = any(f.modality == "image" for spec in specs if spec is not None for _, f in spec.observation_fields())
    captions = self.captions_built and any(s.type == "captions" and s.options.captions for s in self.specs)
    if config.model.get("max_image_tokens", -1) >= 0 and (images or captions):
      # Training may cap the image tokens it encodes per sequence; acting feeds other chunk shapes, so
      # evaluation encodes every image position (the parameters are the same).
      self.config.model.max_image_tokens = -1

  @property
  def text_tokenizer(self):
    if self._text_tokenizer is None:
      path = sentencepiece_model_path(self.config.vocab, self.data_dir)
      if not os.path.exists(path):
        raise EvaluationError(f"no SentencePiece model at {path} (text observations and captions need it); "
                              f"build it with `gato-data build --dataset=sentencepiece --data_dir={self.data_dir}` "
                              "or set --config.vocab.sentencepiece_model")
      self._text_tokenizer = TextTokenizer(path)
    return self._text_tokenizer
