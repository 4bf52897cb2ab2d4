"""Chaos soak: gato-train on the real input pipeline, killed at random moments and restarted on random
meshes, checked against one uninterrupted run.

  python -m launch.chaos_soak --workdir /tmp/soak --kills 12 [--steps 200 --seed 0]

Builds a small CartPole dataset with the real builder (the `envs` extra), runs the reference (mesh
data=2 x fsdp=2 x tensor=2, 8 CPU devices) once, then the chaos run: each segment starts on a mesh
drawn from the shapes that fit 8 devices (the first `--fixed_mesh_kills` on the reference mesh) and
is ended by SIGKILL or SIGTERM, at a random step or while a checkpoint is being written. After each
restore it checks that
  - the checkpoint it resumed from equals the reference run's of that step: bitwise while every
    segment so far ran on the reference mesh, within float-reduction tolerance once one did not;
  - every loss it logged equals the reference's at that step (same rule);
and at the end, the final params (same rule). Exits 0 when all hold; prints one line per segment.
"""

import argparse
import dataclasses
import glob
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np

REFERENCE_MESH = (2, 2, 2)
# Shapes over 8 devices that the tiny model's dimensions divide (tensor <= 2: 2 heads).
MESHES = [(8, 1, 1), (4, 2, 1), (2, 4, 1), (1, 8, 1), (4, 1, 2), (2, 2, 2), (1, 4, 2)]
RTOL, ATOL = 2e-4, 1e-5  # float-reduction tolerance after a mesh change (a few hundred Adam steps)


@dataclasses.dataclass
class Segment:
  mesh: tuple
  signal_name: str
  during_save: bool
  resumed_from: int | None
  status: int
  exact: bool


def overrides(args, data_dir: str, mesh) -> list[str]:
  """The soak's config on top of experiments/tiny_demo.py: a small model, CartPole, a log line and
  kept checkpoint for every few steps."""
  d, f, t = mesh
  return [f"--config.data.data_dir={data_dir}", "--config.data.mixture=cartpole:1",
          f"--config.num_train_steps={args.steps}", "--config.log_every_steps=1",
          "--config.checkpoint.keep_last=100000",
          "--config.data.sequence_length=32", "--config.model.max_length=32", "--config.batch_size=8",
          "--config.vocab.text_vocab_size=128", "--config.vocab.num_continuous_bins=64",
          "--config.vocab.num_discrete_values=64", "--config.model.num_heads=2", "--config.model.head_dim=16",
          "--config.model.embed_dim=32", "--config.model.mlp_dim=64", "--config.model.max_obs_positions=16",
          "--config.model.dropout_rate=0.1", "--config.optimizer.warmup_steps=4",
          "--config.peak_flops_per_device=1e9",
          f"--config.mesh.data={d}", f"--config.mesh.fsdp={f}", f"--config.mesh.tensor={t}"]


def start(args, workdir: str, data_dir: str, mesh, log_path: str, every: int = 0) -> subprocess.Popen:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_COMPILATION_CACHE_DIR=os.path.join(args.workdir, "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  config = os.path.join(repo, "experiments", "tiny_demo.py")
  cmd = [sys.executable, "-m", "gato_jax.train", f"--config={config}",
         f"--workdir={workdir}", *overrides(args, data_dir, mesh),
         f"--config.checkpoint_every_steps={every or args.checkpoint_every}"]
  return subprocess.Popen(cmd, cwd=repo, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def logged_losses(workdir: str) -> list[dict[int, float]]:
  """{step: loss} of each TensorBoard events file (one per segment), oldest first, full precision."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")),
                     key=os.path.getmtime):
    losses = {}
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          if value.tag == "train/loss":
            losses[event.step] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
                else value.simple_value
    except tf.errors.DataLossError:
      pass  # a SIGKILL mid-write leaves the last record torn
    out.append(losses)
  return out


def read_tree(path: str):
  """The arrays Orbax saved at `path` as numpy leaves (on this process's 8 CPU devices)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings(), ocp.PyTreeCheckpointer() as checkpointer:
    warnings.simplefilter("ignore")  # "sharding info not provided": the saved one is what we want
    tree = checkpointer.restore(path)
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _max_diff(x, y) -> float:
  return float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0


def compare(a, b, exact: bool, what: str) -> str | None:
  """None when the leaves agree (bitwise, or within tolerance), else what differs."""
  if len(a) != len(b):
    return f"{what}: {len(a)} vs {len(b)} leaves"
  for i, (x, y) in enumerate(zip(a, b)):
    if exact and not np.array_equal(x, y):
      return f"{what}: leaf {i} differs (max |diff| {_max_diff(x, y):.3g})"
    if not exact and not np.allclose(x, y, rtol=RTOL, atol=ATOL):
      return f"{what}: leaf {i} differs beyond tolerance (max |diff| {_max_diff(x, y):.3g})"
  return None


def committed(workdir: str) -> list[int]:
  from gato_jax import checkpointing  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "checkpoints")
  return checkpointing.committed_steps(path) if os.path.isdir(path) else []


def saving(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


def progress_step(log_path: str) -> int:
  steps = [int(line.split()[1].split("/")[0]) for line in open(log_path, errors="replace")
           if line.startswith("step ") and "| loss " in line]
  return steps[-1] if steps else 0


def kill_at_random(proc, args, rng: random.Random, workdir: str, log_path: str) -> tuple[str, bool]:
  """Waits for training to start, then SIGKILLs or SIGTERMs at a random step or during a save."""
  while progress_step(log_path) < 1 and proc.poll() is None:
    time.sleep(0.05)
  during_save = rng.random() < args.save_kill_fraction
  target = progress_step(log_path) + rng.randint(0, 2 * args.checkpoint_every)
  while proc.poll() is None:
    if (saving(workdir) if during_save else progress_step(log_path) >= target):
      break
    time.sleep(0.005)
  name = rng.choice(["SIGKILL", "SIGTERM"])
  if proc.poll() is None:
    proc.send_signal(getattr(signal, name))
  proc.wait()
  return name, during_save


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch.chaos_soak", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--kills", type=int, default=12)
  parser.add_argument("--fixed_mesh_kills", type=int, default=4,
                      help="the first restarts stay on the reference mesh (checked bitwise)")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--checkpoint_every", type=int, default=5)
  parser.add_argument("--save_kill_fraction", type=float, default=0.3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default="", help="a data_dir with cartpole built (default: build one)")
  args = parser.parse_args(argv)
  # This process reads checkpoints written on 8 devices: it gets the same 8 CPU devices.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  rng = random.Random(args.seed)
  os.makedirs(args.workdir, exist_ok=True)
  data_dir = args.data_dir or os.path.join(args.workdir, "data")
  if not os.path.exists(os.path.join(data_dir, "cartpole")):
    from data_pipelines import building  # pylint: disable=g-import-not-at-top
    building.build("cartpole", data_dir, episodes=32, validation_episodes=4, return_episodes=2)

  reference = os.path.join(args.workdir, "reference")
  if not os.path.exists(os.path.join(reference, "params")):
    # A checkpoint at every step: a preempted segment saves wherever SIGTERM found it.
    proc = start(args, reference, data_dir, REFERENCE_MESH, os.path.join(args.workdir, "reference.log"),
                 every=1)
    if proc.wait() != 0:
      print(f"chaos_soak: the reference run failed; see {args.workdir}/reference.log", file=sys.stderr)
      return 1
  reference_losses = {k: v for part in logged_losses(reference) for k, v in part.items()}

  chaos = os.path.join(args.workdir, "chaos")
  failures, segments, exact = [], [], True
  for index in range(args.kills + 1):
    mesh = REFERENCE_MESH if index <= args.fixed_mesh_kills else rng.choice(MESHES)
    log_path = os.path.join(args.workdir, f"segment_{index:02d}.log")
    resumed = committed(chaos)[-1] if committed(chaos) else None
    proc = start(args, chaos, data_dir, mesh, log_path)
    last = index == args.kills
    name, during_save = ("none", False) if last else kill_at_random(proc, args, rng, chaos, log_path)
    status = proc.wait()
    exact_before = exact
    exact = exact and mesh == REFERENCE_MESH
    if resumed is not None:
      state = lambda run: read_tree(os.path.join(run, "checkpoints", str(resumed), "state"))
      problem = compare(state(chaos), state(reference), exact_before,
                        f"segment {index}: the checkpoint of step {resumed}")
      if problem:
        failures.append(problem)
    losses = logged_losses(chaos)[-1] if logged_losses(chaos) else {}
    for step, loss in sorted(losses.items()):
      want = reference_losses.get(step)
      same = loss == want if exact else want is not None and np.isclose(loss, want, rtol=RTOL, atol=ATOL)
      if not same:
        failures.append(f"segment {index}: loss at step {step} is {loss!r}, the reference's {want!r}")
    segments.append(Segment(mesh, name, during_save, resumed, status, exact))
    print(f"segment {index:2d}: mesh {'x'.join(map(str, mesh))}, resumed from {resumed}, "
          f"{len(losses)} losses checked ({'bitwise' if exact else 'tolerance'}), ended by {name}"
          f"{' during a save' if during_save else ''}, status {status}", flush=True)
    expected = {"none": (0,), "SIGKILL": (-signal.SIGKILL,), "SIGTERM": (143, -signal.SIGTERM, 0)}[name]
    if status not in expected:  # SIGTERM: saved and exited 143 (or finished first); -15 before the loop ran
      failures.append(f"segment {index} exited {status} (expected {expected} after {name}); see {log_path}")
  params = lambda w: read_tree(os.path.join(w, "params")) if os.path.exists(os.path.join(w, "params")) else []
  problem = compare(params(chaos), params(reference), exact, "final params")
  if problem:
    failures.append(problem)
  kills = sum(s.signal_name != "none" for s in segments)
  print(f"chaos_soak: {kills} kills ({sum(s.during_save for s in segments)} aimed at saves), "
        f"{len(set(s.mesh for s in segments))} meshes, final params "
        f"{'bitwise' if exact else 'within tolerance'}: "
        + ("OK" if not failures else f"{len(failures)} failure(s)"), flush=True)
  for failure in failures:
    print(f"  {failure}", flush=True)
  return 0 if not failures else 1


if __name__ == "__main__":
  sys.exit(main())
