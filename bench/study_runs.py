"""What the studies (bench/fewshot.py, bench/generalist.py) share: datasets built once, trainings run as
`gato-train` processes, the persistent compile cache, the machine's description.

Trainings are processes (python -m gato_jax.train) because SeqIO's registries are per process and a
task's data_dir is fixed when it is registered; evaluations run in the study's own process.
"""

import glob
import os
import platform
import re
import subprocess
import sys
import time

from absl import flags, logging
from ml_collections import config_flags

GATO_DATA = os.path.join(os.path.dirname(sys.executable), "gato-data")


def train_episodes(name: str, data_dir: str) -> int | None:
  """Train-split size of a built dataset, None when it is not built."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  infos = sorted(glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json")))
  if not infos:
    return None
  return tfds.builder_from_directory(os.path.dirname(infos[-1])).info.splits["train"].num_examples


def ensure_dataset(name: str, data_dir: str, episodes: int, validation: int | None, *,
                   gato_data: str = GATO_DATA, return_episodes: int | None = None) -> None:
  """Builds `name` into data_dir unless it is there; refuses one built with another episode count.
  episodes 0: the builder's "all" (text: every document); validation / return_episodes None: the
  builder's default."""
  have = train_episodes(name, data_dir)
  if have is None:
    command = [gato_data, "build", f"--dataset={name}", f"--data_dir={data_dir}",
               f"--episodes={episodes}", "--skip_built"]
    if validation is not None:
      command.append(f"--validation_episodes={validation}")
    if return_episodes is not None:
      command.append(f"--return_episodes={return_episodes}")
    logging.info("Building: %s", " ".join(command))
    subprocess.run(command, check=True)
    have = train_episodes(name, data_dir)
  if episodes and have != episodes:
    raise ValueError(f"{data_dir}/{name} has {have} train episodes, the study needs {episodes}: "
                     "remove it or point config.data.data_dir elsewhere")


def command(module: str, workdir: str, overrides: dict) -> list[str]:
  """`python -m <module>` with the study's own --config and --config.* flags, then `overrides` (the
  later flag wins). Every run is its own process: SeqIO's registries are per process and a task's
  data_dir is fixed at registration."""
  forwarded = [a for a in sys.argv[1:] if a.startswith("--config.")]
  return ([sys.executable, "-m", module, f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}",
           f"--workdir={workdir}"] + forwarded + [f"--config.{k}={v}" for k, v in overrides.items()])


def run(cmd: list[str], log_path: str) -> str:
  """Runs `cmd` with its output in `log_path`; its output, or a RuntimeError with the log's tail."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  logging.info("Running: %s", " ".join(cmd))
  with open(log_path, "w") as log:
    done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
  with open(log_path) as f:
    output = f.read()
  if done.returncode:
    tail = "\n".join(output.strip().splitlines()[-5:])
    raise RuntimeError(f"{' '.join(cmd[:3])} exited with {done.returncode} (log {log_path}):\n{tail}")
  return output


STEP_LINE = re.compile(r"^step (\d+)/\d+ .*?\| loss ([\d.]+) .*?\| action_acc ([\d.]+)", re.M)


def train(workdir: str, overrides: dict) -> dict:
  """gato-train on the study's config with `overrides`; its last logged loss and action accuracy."""
  start = time.perf_counter()
  output = run(command("gato_jax.train", workdir, overrides), os.path.join(workdir, "train.log"))
  last = STEP_LINE.findall(output)
  if not last:
    raise RuntimeError(f"no step line in {os.path.join(workdir, 'train.log')}")
  step, loss, accuracy = last[-1]
  return {"steps": int(step), "train_seconds": time.perf_counter() - start, "final_loss": float(loss),
          "final_action_accuracy": float(accuracy)}


def use_compile_cache(workdir: str) -> None:
  """A persistent JAX compile cache under workdir for this process and the trainings it starts: runs
  that compile the same train step read it from there (and evaluations here share theirs)."""
  import jax  # pylint: disable=g-import-not-at-top
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(workdir), "jax_cache")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def study_config(argv, section: str, example: str):
  """A study's checked --config: one line (no traceback) when there are stray arguments, no --config,
  or no `section` in it (`example` names a config that has one)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from gato_jax import cli_flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli_flags.require(cli_flags.CONFIG)
  cli_flags.quiet_library_logs()
  config = cli_flags.CONFIG.value
  parts = section.split(".")
  node = config
  for part in parts:
    if part not in node:
      cli_flags.fail(f"--config: {config.get('name', 'the config')} has no `{section}` section; use "
                     f"{example} or a config derived from it")
    node = node[part]
  return config


def machine(load_start) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return {"cpus": os.cpu_count(), "platform": platform.machine(), "jax": jax.__version__,
          "devices": jax.device_count(), "backend": jax.default_backend(),
          "load_average_start": list(load_start), "load_average_end": list(os.getloadavg())}
