"""Evaluation of Gato checkpoints: the evaluators `config.evals` chooses, rollouts, scores, reports.

  options.py       config.eval / config.evals read once (EvalOptions, EvalSpec)
  registry.py      the evaluator types (offline, control, captions) and their one interface
  offline.py       `offline`: validation loss / action accuracy through SeqIO (a checkpoint or training's mesh)
  control.py       `control`: closed-loop rollouts scored against the data's expert and random returns
  captions.py      `captions`: caption generation and scoring
  context.py       what a run's evaluators share (config, vocabulary, tasks, datasets, text tokenizer)
  task_choice.py   which control tasks are evaluated, and which can be rolled out
  checkpoints.py   committed checkpoints, the step asked for (a number, latest, best), params on one device
  evaluator.py     gato-eval's runner: one checkpoint (or every new one, --watch) into one report
  in_training.py   config.evals' in-training evaluators, built by gato-train for the training loop
  agent.py         GatoAgent (prompt, observation tokens, action tokens sampled with the KV cache)
  rollout.py       episodes in a ControlTask's simulator, a batch in lockstep, crashes recorded
  scores.py        expert-normalised scores, bootstrap intervals, per-domain summaries
  datasets.py      a built dataset's returns, seeds and validation demonstrations
  report.py        report.json, report.md, TensorBoard, scores.png
  replay.py        GIFs rendered by replaying episodes in a TensorFlow-free child process

Small stand-ins for tests and benchmarks (tiny config, toy simulator, checkpoints) live in
tests/testlib/eval_testing.py.

Nothing is imported here: replay.py runs as a child process that must not load TensorFlow or JAX.
"""
