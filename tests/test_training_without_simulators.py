"""Training needs built TFDS files and nothing else: no simulator, no data_pipelines (the `envs` extra and
the builders may be absent on a training host)."""

import os
import subprocess
import sys
import textwrap

import pytest

from testlib import data_testing as testing

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("gymnasium", "minigrid", "metaworld", "mujoco", "Box2D", "pygame", "data_pipelines")

# Runs gato-train with an import hook that refuses the simulators and the builders, as an install
# without them would.
CHILD = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Refuse(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ImportError(f"{{name}} is not installed (blocked by the test)")
        return None

    sys.meta_path.insert(0, Refuse())
    from gato_jax import train
    sys.argv = ["gato-train"] + {argv!r}
    try:
      train.run()
    finally:
      leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
      assert not leaked, leaked
""")


def test_gato_train_runs_from_tfds_files_without_simulators_or_builders(tmp_path):
  data_dir = tmp_path / "data"
  testing.build_tiny_data_dir(data_dir, num_episodes=(8, 2), text_vocab_size=512)
  argv = ["--config", os.path.join(ROOT, "experiments", "tiny_demo.py"), "--workdir", str(tmp_path / "run"),
          f"--config.data.data_dir={data_dir}", "--config.data.mixture=tiny_pole:1,tiny_reach:1,text:1",
          "--config.num_train_steps=3", "--config.checkpoint_every_steps=3", "--config.log_every_steps=1",
          "--config.batch_size=8", "--config.data.sequence_length=64"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", CHILD.format(blocked=BLOCKED, argv=argv)], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "3"), os.listdir(tmp_path / "run" / "checkpoints")
