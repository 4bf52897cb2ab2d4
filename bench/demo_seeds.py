"""`make demo` from scratch on several seeds: does every fresh run reach the demo's targets, and how long?

    python bench/demo_seeds.py                       # seeds 1,2,3 under /tmp/gato_demo_seeds
    python bench/demo_seeds.py --seeds=0 --workdir=/tmp/one_seed
    python bench/demo_seeds.py --eval_only   # the same runs' checkpoints under a changed config.eval

Each seed runs the Makefile's own `demo` target (`make demo DEMO_DIR=<workdir>/seed_<s> DEMO_SEED=<s>`)
in a new directory: data built, trained on 8 fake devices, evaluated (50 sampled episodes per task), so
the time measured is a whole fresh demo (the .venv already installed). Only the training seed differs;
the datasets and the evaluation's environment seeds are the same on every run, as for a user.
--eval_only re-runs only `make demo-eval` on each seed's finished run (after a change to config.eval,
which training never reads), keeping the full runs' minutes from the previous demo_seeds.json.
Writes bench/results/demo_seeds.{json,md}: per seed and task the expert-normalised score with its 95%
bootstrap interval, and pass / fail against TARGETS on the score and on the interval's lower end.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io  # noqa: E402

# The demo's targets (issue #13): expert-normalised score of each task on every fresh run.
TARGETS = {"cartpole": 0.8, "babyai_gotoredball": 0.5, "metaworld_reach": 0.5}
TIME_LIMIT_S = 12 * 60
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_seed(seed: int, workdir: str, eval_only: bool = False) -> dict:
  out = os.path.join(workdir, f"seed_{seed}")
  os.makedirs(workdir, exist_ok=True)
  if eval_only:
    shutil.rmtree(os.path.join(out, "eval"), ignore_errors=True)  # gato-eval skips evaluated steps
  else:
    shutil.rmtree(out, ignore_errors=True)
  log_path = os.path.join(workdir, f"seed_{seed}{'_eval' if eval_only else ''}.log")
  started = time.time()
  with open(log_path, "w") as log:
    code = subprocess.run(["make", "demo-eval" if eval_only else "demo", f"DEMO_DIR={out}", f"DEMO_SEED={seed}"],
                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
  seconds = time.time() - started
  row = {"seed": seed, "exit_code": code, "log": log_path, "tasks": {},
         ("eval_seconds" if eval_only else "seconds"): round(seconds, 1)}
  report = os.path.join(out, "eval", "report.json")
  if code == 0 and os.path.exists(report):
    with open(report) as f:
      tasks = json.load(f)["tasks"]
    for name, target in TARGETS.items():
      t = tasks.get(name, {})
      row["tasks"][name] = {k: t.get(k) for k in ("normalized_score", "score_ci_low", "score_ci_high",
                                                  "mean_return", "episodes")}
      row["tasks"][name]["target"] = target
  return row


def passes(row: dict, key: str) -> bool:
  return row["exit_code"] == 0 and all(
      (row["tasks"].get(name, {}).get(key) or -1.0) >= target for name, target in TARGETS.items())


def markdown(result: dict) -> str:
  lines = ["# `make demo` on fresh seeds", "",
           f"Machine: {result['machine']}, load average {result['load_start']} at the start and "
           f"{result['load_end']} at the end. Each row: `make demo DEMO_DIR=... DEMO_SEED=s` from an empty "
           "directory (data build, training, evaluation; the .venv already installed). Score: expert-normalised "
           "return of 50 sampled episodes, [95% bootstrap interval]. Written by `bench/demo_seeds.py`.", "",
           "| seed | " + " | ".join(TARGETS) + " | minutes | all targets (score) | all targets (interval's low end) |",
           "| ---: | " + " | ".join("---" for _ in TARGETS) + " | ---: | --- | --- |"]
  for row in result["rows"]:
    cells = []
    for name in TARGETS:
      t = row["tasks"].get(name)
      cells.append("failed" if not t or t["normalized_score"] is None else
                   f"{t['normalized_score']:.2f} [{t['score_ci_low']:.2f}, {t['score_ci_high']:.2f}]")
    lines.append(f"| {row['seed']} | " + " | ".join(cells) + f" | {row['seconds'] / 60:.1f} | "
                 f"{'yes' if passes(row, 'normalized_score') else 'no'} | "
                 f"{'yes' if passes(row, 'score_ci_low') else 'no'} |")
  lines += ["", "Targets: " + ", ".join(f"{n} >= {t}" for n, t in TARGETS.items()) +
            f"; the whole demo within {TIME_LIMIT_S // 60} minutes."]
  if any("eval_seconds" in row for row in result["rows"]):
    lines.append("Scores from `--eval_only`: each run's final checkpoint evaluated again with `make demo-eval` "
                 "after a change to config.eval (which training never reads); minutes are the full fresh runs'.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="1,2,3")
  parser.add_argument("--workdir", default="/tmp/gato_demo_seeds")
  parser.add_argument("--out_dir", default=os.path.join(REPO, "bench", "results"))
  parser.add_argument("--eval_only", action="store_true", help="re-evaluate the finished runs only")
  args = parser.parse_args(argv)
  load_start = [round(x, 2) for x in os.getloadavg()]
  previous = {}
  if args.eval_only:
    with open(os.path.join(args.out_dir, "demo_seeds.json")) as f:
      previous = {r["seed"]: r for r in json.load(f)["rows"]}
  rows = []
  for seed in (int(s) for s in args.seeds.split(",")):
    row = run_seed(seed, args.workdir, args.eval_only)
    if args.eval_only:  # minutes: the full run's (its own evaluation included); eval_seconds: this one's
      row["seconds"], row["trained_in"] = previous[seed]["seconds"], previous[seed]["log"]
    rows.append(row)
    print(json.dumps(rows[-1]), flush=True)
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "load_start": load_start,
            "load_end": [round(x, 2) for x in os.getloadavg()], "targets": TARGETS,
            "time_limit_s": TIME_LIMIT_S, "rows": rows,
            "all_pass": all(passes(r, "normalized_score") and r["seconds"] <= TIME_LIMIT_S for r in rows)}
  results_io.write_results(args.out_dir, "demo_seeds", result, markdown(result))
  return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
