"""gato-eval: evaluates a training run's checkpoints in the simulators its data came from.

  gato-eval --config experiments/tiny_demo.py --workdir demo_output            # the latest checkpoint
  gato-eval --config experiments/tiny_demo.py --workdir demo_output --step 400
  gato-eval --config experiments/tiny_demo.py --workdir demo_output --step best   # by checkpoint.best_metric
  gato-eval --config experiments/tiny_demo.py --workdir demo_output --watch    # each new checkpoint
  gato-eval ... --config.eval.tasks=cartpole --config.eval.episodes_per_task=20 --config.eval.greedy=True
  gato-eval --module_import=my_tasks ... --config.eval.tasks=my_task                 # your own task

Writes <workdir>/eval/report.json (per task: normalized_score with its interval, mean_return,
expert_return, random_return, episodes, ...), report.md, scores.png, gifs/<task>.gif, one
steps/step_N.json per evaluated checkpoint, and TensorBoard scalars in <workdir>/tensorboard/eval;
prints the score table and where those files are. Checkpoints are the committed steps gato-train
resumes from (Orbax's listing); step directories left out are logged with the reason. Exit code 1
with a one-line reason on bad input (unknown task, no checkpoint, a checkpoint that does not match
the config, dataset not built); 2 for a bad flag, config file or --config.key.
"""

import os
import sys

from absl import app, flags, logging

from gato_jax import cli_flags

_CONFIG = cli_flags.CONFIG
_WORKDIR = cli_flags.WORKDIR
_MODULE_IMPORT = cli_flags.module_import_flag()
_STEP = flags.DEFINE_string("step", None, "Checkpoint step to evaluate: a number, or `best` (the step the "
                            "run kept by its config.checkpoint.best_metric); default: the latest.")
_SERVER = flags.DEFINE_string("server", None, "URL of a gato-serve: its checkpoint acts the rollouts "
                              "(same tasks, seeds and scores; no offline metrics).")
_WATCH = flags.DEFINE_bool("watch", False, "Evaluate every new checkpoint as training writes it, until "
                           "the final step (config.num_train_steps) or config.eval.watch_timeout_s.")


def print_report(report: dict) -> None:
  from gato_jax.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top  # after flags
  print(report_lib.markdown(report), flush=True)
  files = report.get("files", {})
  print(f"Report: {files.get('json')}  (markdown {files.get('markdown')}, plot {files.get('plot')}, "
        f"GIFs in {os.path.join(report_lib.eval_dir(report['workdir']), 'gifs')}, TensorBoard "
        f"{files.get('tensorboard')})", flush=True)


def unbuilt_registered_tasks(config) -> str | None:
  """The refusal for tasks named in config.eval.tasks that are registered simulators whose dataset is
  not built in the data_dir (they are not "unknown": they need `gato-data build`), else None."""
  names = [t.strip() for t in str(config.eval.get("tasks", "") or "").split(",") if t.strip()]
  if not names:
    return None
  from gato_jax.data import sources  # pylint: disable=g-import-not-at-top  # after flags
  from gato_jax.envs import registry  # pylint: disable=g-import-not-at-top
  built = sources.discover_datasets(config.data.data_dir)
  unbuilt = [n for n in names if n in registry.names() and n not in built]
  if not unbuilt:
    return None
  return (f"task(s) {unbuilt} are registered but not built in config.data.data_dir={config.data.data_dir!r}: "
          f"gato-data build --data_dir={config.data.data_dir} --dataset={unbuilt[0]}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli_flags.require(_CONFIG, _WORKDIR)
  cli_flags.quiet_library_logs()
  cli_flags.import_modules(_MODULE_IMPORT.value)
  from gato_jax.evaluation.datasets import EvaluationError  # pylint: disable=g-import-not-at-top  # after flags
  from gato_jax.evaluation.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  from gato_jax.evaluation.options import EvalConfigError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  cli_flags.set_details_dir(_WORKDIR.value)
  try:
    unbuilt = unbuilt_registered_tasks(config)
    if unbuilt:
      raise EvaluationError(unbuilt)
    step = _STEP.value
    if step is not None and step != "best":
      if not step.isdigit():
        raise EvaluationError(f"--step={step!r}; expected a step number or `best`")
      step = int(step)
    evaluator = Evaluator(config, _WORKDIR.value)
    if _WATCH.value:
      if _STEP.value is not None:
        raise EvaluationError("--step and --watch exclude each other")
      steps = evaluator.watch(config.eval.watch_interval_s, config.eval.watch_timeout_s,
                              final_step=config.num_train_steps, on_report=print_report)
      logging.info("Evaluated steps %s", steps)
    elif _SERVER.value:
      from gato_jax.serving import remote  # pylint: disable=g-import-not-at-top  # after flags; the serve extra
      try:
        print_report(remote.evaluate_served(evaluator, _SERVER.value))
      except remote.ServerError as e:
        cli_flags.fail(str(e), 1)
    else:
      print_report(evaluator.evaluate_checkpoint(step))
  except (EvaluationError, EvalConfigError) as e:
    sys.exit(f"gato-eval: {e}")
  except ValueError as e:  # bad dataset metadata (an expert return not above the random one): one line
    cli_flags.fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 1)


def run() -> None:
  cli_flags.run(main, "gato-eval")


if __name__ == "__main__":
  run()
