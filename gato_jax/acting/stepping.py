"""The public stepping API: a trained Gato acting one episode at a time, one observation in, one action out.

  agent = Agent.from_checkpoint("demo_output", task="cartpole", prompt=demo_episode)
  agent.reset()
  action = agent.act(observation)   # a dict of the task's observation fields -> an action of its space

It is the batched GatoAgent (acting/agent.py) at batch 1: the KV cache, the rolling window, the
prompt and the sampling settings are the evaluation's, and their defaults are the checkpoint config's
`eval` section (context_length, prompt_tokens, greedy, temperature, roll_keep), so an agent acts as
gato-eval's does.
"""

from typing import Any, Mapping, Optional, Union

import jax

from gato_jax.acting import loading
from gato_jax.acting.agent import GatoAgent
from gato_jax.envs import registry
from gato_jax.episodes import TaskSpec
from gato_jax.model import options
from gato_jax.tokenizers import TextTokenizer

Episode = Mapping[str, Any]  # {"steps": {"observation": {...}, "action": [T, ...], "reward": [T]}}


def task_spec(task: Union[str, TaskSpec]) -> TaskSpec:
  """A TaskSpec as given, or the spec of a registered control task (built-in or the user's own)."""
  if isinstance(task, TaskSpec):
    return task
  try:
    return registry.get(str(task)).spec
  except KeyError as e:
    raise loading.LoadError(str(e.args[0]).split(";")[0] + " (pass a TaskSpec for an unregistered task)") from None


def acting_settings(config, **overrides) -> dict:
  """GatoAgent's keyword arguments from a training config's eval section, then `overrides` (not None)."""
  e = config.get("eval", {})
  length = int(e.get("context_length", 0) or config.data.sequence_length)
  settings = {
      "context_length": length,
      "prompt_tokens": int(e.get("prompt_tokens", 0) or config.data.get("max_prompt_fraction", 0.5) * length),
      "greedy": bool(e.get("greedy", False)),
      "temperature": float(e.get("temperature", 1.0)),
      "roll_keep": float(e.get("roll_keep", 0.75)),
      "seed": int(e.get("seed", 0)),
      "chunk_dtype": options.chunk_dtype(config),
  }
  settings.update({k: v for k, v in overrides.items() if v is not None})
  return settings


def text_tokenizer_for(spec: TaskSpec, sentencepiece_model: Optional[str]):
  """The SentencePiece tokenizer when the task observes text (None otherwise)."""
  if not any(f.modality == "text" for _, f in spec.observation_fields()):
    return None
  if not sentencepiece_model:
    raise loading.LoadError(f"task {spec.name!r} observes text: pass sentencepiece_model= (the .model file "
                            "of the training's data_dir)")
  return TextTokenizer(sentencepiece_model)


class Agent:
  """One episode at a time of one task; see the module docstring."""

  def __init__(self, model, layout, spec: TaskSpec, text_tokenizer=None, *, prompt: Optional[Episode] = None,
               **settings):
    self.spec = spec
    self._agent = GatoAgent(model, layout, spec, text_tokenizer, **settings)
    self.set_prompt(prompt)
    self.reset()

  @classmethod
  def from_checkpoint(cls, path: str, task: Union[str, TaskSpec], prompt: Optional[Episode] = None, *,
                      config=None, mesh: Optional[jax.sharding.Mesh] = None,
                      sentencepiece_model: Optional[str] = None, **settings) -> "Agent":
    """An agent of the model at `path`: a workdir (its latest committed checkpoint), a checkpoint step
    directory, or exported params (with `config=`). `task`: a registered task name or a TaskSpec;
    `prompt`: a demonstration episode of the task (its end conditions the agent), or None; `settings`
    override the config's eval section (context_length, prompt_tokens, greedy, temperature, roll_keep,
    seed, chunk_dtype: a dtype name or None)."""
    loaded = loading.load(path, config, mesh)
    spec = task_spec(task)
    return cls(loaded.model, loaded.layout, spec, text_tokenizer_for(spec, sentencepiece_model), prompt=prompt,
               **acting_settings(loaded.config, **settings))

  def set_prompt(self, prompt: Optional[Episode]) -> None:
    """The demonstration the next reset() starts from (None: no prompt)."""
    self._prompt = self._agent.prompt_from_episode(prompt) if prompt is not None else None

  def reset(self, prompt: Optional[Episode] = None) -> None:
    """Starts an episode (with a new demonstration prompt when given)."""
    if prompt is not None:
      self.set_prompt(prompt)
    self._agent.reset([self._prompt])

  def act(self, observation: Mapping[str, Any]):
    """The action for `observation` (a dict of the task's observation fields), in the task's action space."""
    return self._agent.act([observation])[0]

  @property
  def steps(self) -> int:
    """Steps acted in this episode."""
    return len(self._agent.histories[0].steps)
