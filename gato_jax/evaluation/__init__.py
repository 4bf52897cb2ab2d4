"""Evaluation of Gato checkpoints: the acting agent, rollouts in the data's simulators, scores, reports.

  agent.py     GatoAgent (prompt, observation tokens, action tokens sampled with the KV cache)
  rollout.py   episodes in a ControlTask's simulator, a batch in lockstep, crashes recorded
  scores.py    expert-normalised scores, bootstrap intervals, per-domain summaries
  datasets.py  a built dataset's returns, seeds and validation demonstrations
  offline.py   validation loss / action accuracy through SeqIO; caption generation and scoring
  report.py    report.json, report.md, TensorBoard, scores.png
  replay.py    GIFs rendered by replaying episodes in a TensorFlow-free child process
  evaluator.py one checkpoint (or every new one, --watch) end to end; gato_jax/evaluate.py is the CLI

Small stand-ins for tests and benchmarks (tiny config, toy simulator, checkpoints) live in
tests/testlib/eval_testing.py.

Nothing is imported here: replay.py runs as a child process that must not load TensorFlow or JAX.
"""
