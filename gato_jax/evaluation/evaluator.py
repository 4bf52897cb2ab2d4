"""One checkpoint evaluated end to end (online rollouts, offline metrics, captions, report), or each new
checkpoint of a running training (`watch`).

Checkpoints are read from `<workdir>/checkpoints/<step>` (gato_jax/checkpointing.py), params only, onto
one device whatever mesh trained them. Only committed checkpoints are read, by the one definition
gato-train uses too (`checkpointing.committed_steps`: Orbax's own listing), and the step-like entries
left out are logged with the reason; evaluation never writes into the checkpoint directory, so it
can run beside the training that is filling it.
"""

import copy
import dataclasses
import json
import os
import time
from typing import Any, Optional, Sequence

from absl import logging
import jax
import numpy as np

from gato_jax import checkpointing
from gato_jax.data import mixtures, pipeline, sources
from gato_jax.data.vocabulary import sentencepiece_model_path
from gato_jax.envs import registry
from gato_jax.evaluation import agent as agent_lib, datasets, offline, replay, report as report_lib, rollout, scores
from gato_jax.evaluation.datasets import EvaluationError
from gato_jax.model import default_model_fn, options
from gato_jax.tokenizers import TextTokenizer, VocabLayout
from gato_jax.training import state

MAX_LISTED = 12  # datasets named in an "unknown task" error (a data_dir may hold 170)


@dataclasses.dataclass
class Checkpoint:
  step: int
  path: str


def committed_checkpoints(workdir: str) -> list[Checkpoint]:
  """Committed checkpoints of `workdir`, oldest first (what gato-train would resume from)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return [Checkpoint(step, os.path.join(directory, checkpointing.NAME_FORMAT.build_name(step)))
          for step in checkpointing.committed_steps(directory)]


def log_skipped(workdir: str, already: set | None = None) -> dict[str, str]:
  """Logs each step-like entry of the checkpoint directory that is not evaluated, and why."""
  skipped = checkpointing.skipped_entries(os.path.join(workdir, "checkpoints"))
  for name, why in skipped.items():
    if already is None or name not in already:
      logging.warning("Not evaluating checkpoints/%s: %s.", name, why)
  return skipped


def checkpoint_config(checkpoint: Checkpoint, workdir: str) -> Optional[dict]:
  """The resolved config the checkpoint was trained with (its `config` item, else workdir/config.json)."""
  for path in (os.path.join(checkpoint.path, "config", "metadata"), os.path.join(workdir, "config.json")):
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
  return None


def _eval_value(config, key: str, default):
  return config.eval.get(key, default) if "eval" in config else default


class Evaluator:
  """Evaluates Gato checkpoints of one workdir with one config (see the module docstring)."""

  def __init__(self, config, workdir: str, *, tasks: Optional[Sequence[str]] = None, load_data: bool = True):
    self.config, self.workdir = copy.deepcopy(config), os.path.abspath(os.path.expanduser(workdir))
    self.layout = VocabLayout.from_config(config.vocab)
    self.data_dir = os.path.expanduser(config.data.data_dir)
    self.task_names = list(tasks) if tasks is not None else resolve_tasks(config)
    # Imported datasets without a simulator (RLDS, JAT) get offline validation only; names not in the
    # data_dir are left to load_control_dataset's message.
    refs = sources.discover_datasets(self.data_dir) if load_data else {}
    self.offline_only = [n for n in self.task_names if n in refs and refs[n].kind == "control"
                         and not can_roll_out(n, refs[n], self.data_dir)]
    self.datasets = ({n: datasets.load_control_dataset(n, self.data_dir) for n in self.task_names
                      if n not in self.offline_only} if load_data else {})
    self._text_tokenizer = None
    self._model_def = None
    specs = [d.spec for d in self.datasets.values()] + [refs[n].spec for n in self.offline_only]
    images = any(f.modality == "image" for spec in specs for _, f in spec.observation_fields())
    if config.model.get("max_image_tokens", -1) >= 0 and (images or (config.eval.captions and load_data
                                                                      and self._captions_built())):
      # Training may cap the image tokens it encodes per sequence; acting feeds other chunk shapes, so
      # evaluation encodes every image position (the parameters are the same).
      self.config.model.max_image_tokens = -1

  # ---------------------------------------------------------------------------------------------
  # Model.
  # ---------------------------------------------------------------------------------------------

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

  def model_def(self):
    if self._model_def is None:
      self._model_def = state.abstract_model(default_model_fn(self.config, self.layout))
    return self._model_def

  def load_model(self, checkpoint: Checkpoint):
    """The Gato of `checkpoint` on one device; refuses a config that does not match its params."""
    trained = checkpoint_config(checkpoint, self.workdir)
    if trained is not None:
      mismatches = options.config_mismatches(trained, self.config)
      if mismatches:
        raise EvaluationError(f"checkpoint {checkpoint.path} was trained with a different model than "
                              f"the config asks for: {'; '.join(mismatches)}. Evaluate with the training's "
                              "config (it is saved as <workdir>/config.json).")
    model_def, abstract_state = self.model_def()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            model_def.abstract_params)
    try:
      params = checkpointing.load_params(checkpoint.path, abstract)
    except Exception as e:  # pylint: disable=broad-except
      if not os.path.isdir(checkpoint.path):
        raise FileNotFoundError(f"checkpoint {checkpoint.path} was deleted while being read") from e
      raise EvaluationError(f"checkpoint {checkpoint.path} does not fit the model of this config "
                            f"({type(e).__name__}: {str(e)[:600]}); evaluate with the training's config") from None
    model_state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)
    return model_def.merge(params, jax.random.key(0), model_state)

  # ---------------------------------------------------------------------------------------------
  # Evaluation.
  # ---------------------------------------------------------------------------------------------

  def online(self, model, name: str) -> tuple[dict, Optional[dict]]:
    """(the task's report entry, a GIF request for its first episode) after N episodes."""
    c, e = self.config, self.config.eval
    ds = self.datasets[name]
    length = int(e.context_length or c.data.sequence_length)
    prompt_tokens = int(e.prompt_tokens or c.data.get("max_prompt_fraction", 0.5) * length)
    text = self.text_tokenizer if any(f.modality == "text" for _, f in ds.spec.observation_fields()) else None
    agent = agent_lib.GatoAgent(model, self.layout, ds.spec, text, context_length=length, greedy=e.greedy,
                                temperature=e.temperature, seed=e.seed, prompt_tokens=prompt_tokens,
                                roll_keep=e.roll_keep)
    demos = []
    if e.prompt == "demo":
      demos = datasets.successful_episodes(ds.validation_episodes(max_episodes=32))
    elif e.prompt != "none":
      raise EvaluationError(f"config.eval.prompt={e.prompt!r}; expected 'demo' or 'none'")
    actor = agent_lib.GatoActor(agent, demos, seed=e.seed)
    if e.max_steps and e.max_steps < ds.task.max_steps:
      logging.warning("%s: episodes capped at %d steps, below the %d of the data: the expert and random "
                      "returns were measured over longer episodes, so the score is biased low.", name,
                      e.max_steps, ds.task.max_steps)
    seeds = rollout.evaluation_seeds(ds.build_seed, int(e.episodes_per_task))
    start = time.perf_counter()
    progress = lambda done, total: logging.info("%s: %d/%d episodes (%.0f s)", name, done, total,
                                                time.perf_counter() - start)
    results = rollout.run_episodes(ds.task, actor, seeds, num_envs=int(e.num_envs),
                                   max_steps=int(e.max_steps), failure_return=ds.random_return,
                                   progress=progress)
    score = scores.TaskScore(name, ds.domain, [r.episode_return for r in results], [r.length for r in results],
                             ds.expert_return, ds.random_return, sum(r.crashed for r in results), list(seeds),
                             float(e.confidence), int(e.bootstrap_samples))
    entry = score.to_dict()
    successes = [r.success for r in results if r.success is not None]
    if successes:
      entry["success_rate"] = float(np.mean(successes))
    entry["errors"] = [r.error for r in results if r.error][:5]
    entry["seconds"] = time.perf_counter() - start
    entry["rolls"] = agent.rolls
    gif = None
    if e.gif and results and results[0].actions:
      gif = replay.request(ds.task, results[0].seed, results[0].actions,
                           os.path.join(report_lib.eval_dir(self.workdir), "gifs", f"{name}.gif"),
                           max_frames=int(e.gif_max_frames))
    logging.info("%s: normalised score %.3f [%.3f, %.3f], mean return %.2f (expert %.2f, random %.2f), "
                 "%d episodes in %.0f s", name, entry["normalized_score"], entry["score_ci_low"],
                 entry["score_ci_high"], entry["mean_return"], ds.expert_return, ds.random_return,
                 len(results), entry["seconds"])
    return entry, gif

  def evaluate_model(self, model, step: int, checkpoint_path: str = "") -> dict:
    """Every evaluation of config.eval for `model`; writes the report files and returns the report."""
    e = self.config.eval
    start = time.perf_counter()
    report: dict[str, Any] = {"step": int(step), "checkpoint": checkpoint_path, "workdir": self.workdir,
                              "eval_config": e.to_dict(), "tasks": {}}
    gif_requests = []
    for name in self.task_names:
      if name in self.offline_only:
        continue
      report["tasks"][name], gif = self.online(model, name)
      if gif:
        gif_requests.append(gif)
    gif_job = replay.GifJob(gif_requests)  # renders in a child process while the offline part runs
    if report["tasks"]:  # none when every task is imported without a simulator (offline only)
      report["summary"] = scores.summarize(report["tasks"])
    offline_names = self.task_names if e.offline else self.offline_only
    if offline_names:
      report["offline"] = offline.validation_metrics(
          model, self.config, offline_names, batch_size=int(e.offline_batch_size),
          max_batches=int(e.offline_batches), seed=int(e.seed))
    if e.captions and self._captions_built():
      report["captions"] = offline.caption_evaluation(
          model, self.config, self.layout, self.text_tokenizer, num_examples=int(e.captions),
          temperature=float(e.caption_temperature), max_tokens=int(e.caption_max_tokens), seed=int(e.seed))
    report["gifs"] = {k: v for k, v in gif_job.wait().items() if v}
    report["seconds"] = time.perf_counter() - start
    report_lib.write_report(report, self.workdir)
    return report

  def _captions_built(self) -> bool:
    ref = sources.discover_datasets(self.data_dir).get("captions")
    return ref is not None and ref.kind == "captions"

  def checkpoint(self, step: Optional[int] = None) -> Checkpoint:
    """The checkpoint of `step` (default: the latest), with a clear error when there is none."""
    found = committed_checkpoints(self.workdir)
    skipped = log_skipped(self.workdir)
    if not found:
      where = os.path.join(self.workdir, "checkpoints")
      left_out = "; ".join(f"{name}: {why}" for name, why in skipped.items())
      raise EvaluationError(f"no checkpoint in {where}" + ("" if os.path.isdir(self.workdir) else
                                                           f" ({self.workdir} does not exist)")
                            + (f" (skipped {left_out})" if left_out else "")
                            + "; train first: gato-train --config <experiment> --workdir " + self.workdir)
    if step is None:
      return found[-1]
    for c in found:
      if c.step == step:
        return c
    raise EvaluationError(f"no checkpoint of step {step} in {self.workdir}/checkpoints; there are steps "
                          f"{[c.step for c in found]}")

  def evaluate_checkpoint(self, step: Optional[int] = None) -> dict:
    checkpoint = self.checkpoint(step)
    logging.info("Evaluating %s (step %d) on %s", checkpoint.path, checkpoint.step, ", ".join(self.task_names))
    return self.evaluate_model(self.load_model(checkpoint), checkpoint.step, checkpoint.path)

  def watch(self, interval_s: float, timeout_s: float = 0.0, final_step: Optional[int] = None,
            on_report=None) -> list[int]:
    """Evaluates every checkpoint not evaluated yet, oldest first, as training writes them; returns the
    steps evaluated. Stops after `final_step` is evaluated, or after `timeout_s` without a new one."""
    done = {r["step"] for r in report_lib.load_history(self.workdir)}
    evaluated: list[int] = []
    last_new = time.monotonic()
    reported: set = set()
    while True:
      reported |= set(log_skipped(self.workdir, reported))
      pending = [c for c in committed_checkpoints(self.workdir) if c.step not in done]
      for checkpoint in pending:
        last_new = time.monotonic()
        try:
          model = self.load_model(checkpoint)
        except FileNotFoundError as e:  # deleted by the keep policy before we got to it
          logging.warning("Checkpoint %s vanished before it could be read (%s); skipping it.", checkpoint.path, e)
          done.add(checkpoint.step)
          continue
        result = self.evaluate_model(model, checkpoint.step, checkpoint.path)
        done.add(checkpoint.step)
        evaluated.append(checkpoint.step)
        if on_report is not None:
          on_report(result)
      if final_step is not None and final_step in done:
        return evaluated
      if timeout_s and time.monotonic() - last_new > timeout_s:
        logging.info("No new checkpoint in %s for %.0f s; stopping.", self.workdir, timeout_s)
        return evaluated
      time.sleep(interval_s)


def resolve_tasks(config) -> list[str]:
  """config.eval.tasks (comma-separated), else the control tasks of config.data.mixture; refuses
  names that are not control datasets of config.data.data_dir."""
  refs = sources.discover_datasets(config.data.data_dir)  # read once: every dataset's metadata
  names = [t.strip() for t in str(_eval_value(config, "tasks", "")).split(",") if t.strip()]
  if not names:
    names = mixture_control_tasks(config, refs)
  known = sorted(n for n, r in refs.items() if r.kind == "control")
  unknown = [n for n in names if n not in known]
  if unknown:
    shown = ", ".join(known[:MAX_LISTED]) + (f" and {len(known) - MAX_LISTED} more (gato-data list)"
                                             if len(known) > MAX_LISTED else "")
    raise EvaluationError(f"unknown task(s) {unknown}: the control datasets in {config.data.data_dir} are "
                          f"{shown or 'none'} (build or import them with gato-data)")
  if not names:
    raise EvaluationError(f"config.data.mixture={config.data.mixture!r} has no control task to roll out; "
                          "set --config.eval.tasks=<task>[,<task>...]")
  return names


def mixture_control_tasks(config, refs) -> list[str]:
  """The control tasks of config.data.mixture that can be rolled out (`refs`: the data_dir's datasets)."""
  try:
    names = mixtures.task_names(pipeline.make_mixture(config, refs))
  except (KeyError, ValueError) as e:
    raise EvaluationError(f"config.data.mixture={config.data.mixture!r}: {e}") from None
  control = [n for n in names if n in refs and refs[n].kind == "control"]
  playable = [n for n in control if can_roll_out(n, refs[n], config.data.data_dir)]
  if len(playable) < len(control):
    logging.warning("Validation loss and action accuracy only for %s: no simulator is known for them "
                    "(imported without a recorded environment; register a ControlTask with that name to "
                    "evaluate them online).", sorted(set(control) - set(playable)))
  return control


def can_roll_out(name: str, ref, data_dir: str) -> bool:
  """A control dataset gato-eval can act for: a registered ControlTask or an environment its importer
  recorded. Foreign datasets linked in place (RLDS) carry no simulator."""
  if ref.link is not None:
    return name in registry.names()
  try:
    registry.task_for_dataset(name, sources.read_metadata(name, data_dir))
  except KeyError:
    return False
  return True
