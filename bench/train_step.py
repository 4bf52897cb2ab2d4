"""Train-step throughput on this host: steps/s, tokens/s, compile time and MFU per preset, plus ablations.

    JAX_PLATFORMS=cpu python bench/train_step.py        # tiny_demo, gato_79m, gato_364m + 79m ablations
    JAX_PLATFORMS=cpu python bench/train_step.py --presets=gato_79m --ablate= --noprofile   # one row

The full run takes 30+ minutes on a loaded 2-core machine (load 20). Presets above --big_params get
1 warm-up step and 1 timed step.

Every row runs the real path: `create_train_state` on a partitioning mesh, `make_train_step`,
compiled ahead of time by `program.compile_train_step` (gato_jax/training/program.py) with the state donated, fed the synthetic
iterator's `features.random_batch` rows (images, observations, actions, text documents) already on
the device. The clock covers `--steps` steps after `--warmup`, each ended by block_until_ready.

FLOPs per step are `flops.train_flops_per_step` (PaLM's 6N convention: 6 x non-embedding params x
tokens + attention + output projection; rematerialisation is not counted). MFU divides the achieved
FLOP/s by the best throughput XLA reaches IN THIS RUN on dense [S, S] matmuls (`--matmul_sizes`) of the
model's dtype on the row's devices, measured before the first model and again after the last one.
Rows are `preset` (the experiment file as-is but for the batch), `cpu` (the CPU setup: float32, no
remat; see --cpu_overrides) and ablations. An ablation flips one switch against the `cpu` row, and
the two run step for step in turn in the same process, so a burst of load hits both: their ratio
holds on a noisy machine, and absolute times do not. Step times are the best of the timed steps.
Writes bench/results/train_step.json and train_step.md, with --profile a summary of the top XLA ops
of one traced step of each PROFILED row (bench/train_step_report.py).
"""

import functools
import importlib
import json
import os
import platform
import shutil
import sys
import time

# Fake host devices for the 8-device mesh row; set before jax is imported. 1-device rows use the first.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io  # noqa: E402  (the repository root is on sys.path now)

from gato_jax import partitioning  # noqa: E402
from gato_jax.tokenizers.layout import VocabLayout  # noqa: E402
from gato_jax.training import flops, program as program_lib, state as state_lib  # noqa: E402
from gato_jax.training.synthetic import SyntheticIterator  # noqa: E402

_PRESETS = flags.DEFINE_list("presets", ["tiny_demo", "gato_79m", "gato_364m"], "experiments/<name>.py presets")
_BATCH = flags.DEFINE_list("batch_sizes", ["tiny_demo:8", "gato_79m:1", "gato_364m:1"],
                           "preset:sequences per step")
_LENGTH = flags.DEFINE_integer("length", 1024, "sequence length L")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed steps after compiling (AOT-compiled: no compile in them)")
_STEPS = flags.DEFINE_integer("steps", 3, "timed steps of the preset and cpu rows")
_BIG = flags.DEFINE_float("big_params", 2e8, "above this many parameters: 1 warm-up, 1 timed step")
_ABLATION_STEPS = flags.DEFINE_integer("ablation_steps", 2, "timed steps of each ablation (and of the "
                                       "`cpu` row alongside it), after one warm-up of each")
_SIZES = flags.DEFINE_list("matmul_sizes", ["2048", "4096"], "sizes S of the [S, S] matmuls of the peak")
_CPU = flags.DEFINE_list("cpu_overrides", ["dtype=float32", "remat_policy=none"],
                         "config.model keys of the `cpu` rows (what this host runs best)")
_ABLATE = flags.DEFINE_string("ablate", "gato_79m", "preset whose `cpu` row the ablations flip ('' = none)")
_ONLY = flags.DEFINE_list("ablations", [], "prefixes of the ABLATIONS names to run (default: all)")
_FAKE = flags.DEFINE_bool("fake_devices", True, "also time tiny_demo on its 8-fake-device mesh")
_PROFILE = flags.DEFINE_bool("profile", True, "trace one step of the ablated preset's PROFILED rows")
_PIPELINE = flags.DEFINE_string("input_pipeline", "bench/results/input_pipeline.json",
                                "input pipeline results to compare tokens/s with")
_OUT = flags.DEFINE_string("out_dir", "bench/results", "where train_step.{json,md} go")

# Switches flipped against the `cpu` row: (name, config.model overrides, gather_images).
ABLATIONS = (
    ("attention_impl=xla (dense causal)", {"attention_impl": "xla"}, False),
    ("dtype=bfloat16", {"dtype": "bfloat16"}, False),
    ("remat_policy=full", {"remat_policy": "full"}, False),
    ("remat_policy=dots_saveable", {"remat_policy": "dots_saveable"}, False),
    ("scan_layers=False", {"scan_layers": False}, False),
    ("fused_projections=True", {"fused_projections": True}, False),
    ("scan_layers=False + fused_projections=True", {"scan_layers": False, "fused_projections": True}, False),
    ("max_image_tokens=K (gathered)", {}, True),
    ("max_image_tokens=0 (batch without images)", {"max_image_tokens": 0}, False),
)
PROFILED = ("cpu", "attention_impl=xla (dense causal)")  # rows whose step is traced (with --profile)
TRACE_DIR = "/tmp/gato_train_step_profile"


def load_config(preset: str, **model_overrides):
  config = importlib.import_module(f"experiments.{preset}").get_config()
  for key, value in model_overrides.items():
    setattr(config.model, key, value)
  return config


def parse_overrides(items) -> dict:
  out = {}
  for item in items:
    key, value = item.split("=", 1)
    out[key] = {"True": True, "False": False}.get(value, _number(value))
  return out


def _number(text: str):
  """int, else float, else the text itself (a dtype or policy name)."""
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def image_tokens_per_row(batch) -> int:
  from gato_jax.tokenizers.layout import TokenKind  # pylint: disable=g-import-not-at-top
  return int((batch["kinds"] == TokenKind.IMAGE).sum(1).max())


class Runner:
  """The real train step of `config` compiled for a mesh, its state and one batch on the device.

  `devices` (default: the first local device) and `mesh_shape` (default: all data-parallel) make the
  mesh. `gather_images`: config.model.max_image_tokens = the batch's largest image count per row.
  """

  def __init__(self, config, *, batch_size: int, length: int, devices=None, mesh_shape=None,
               gather_images: bool = False):
    config = config.copy_and_resolve_references()
    config.batch_size, config.data.sequence_length = batch_size, length
    devices = devices or jax.local_devices()[:1]
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape or (-1, 1, 1)
    layout = VocabLayout.from_config(config.vocab)
    m = config.model
    iterator = SyntheticIterator(layout, batch_size, length, seed=0,
                                 num_patch_positions=m.num_patch_positions,
                                 max_obs_positions=m.max_obs_positions,
                                 max_image_tokens=-1 if gather_images else m.max_image_tokens)
    local = iterator.get_next()
    self.image_tokens = image_tokens_per_row(local)
    if gather_images:
      m.max_image_tokens = self.image_tokens
    mesh = partitioning.make_mesh(config.mesh, devices)
    program = program_lib.build(config, mesh)  # the loop's own train program
    model_def = program.model_def
    self.state = state_lib.create_train_state(program.model_fn, program.tx, mesh, model_def, config.seed,
                                              rules=program.rules)
    started = time.perf_counter()
    self.compiled = program_lib.compile_train_step(program.train_step, program.abstract_state, mesh, config)
    self.compile_s = time.perf_counter() - started
    started = time.perf_counter()
    self.batch = jax.block_until_ready(partitioning.global_batch(local, mesh, batch_size))
    self.transfer_s = time.perf_counter() - started  # host -> device of the uint8 patches and the rest
    self.times, self.metrics = [], None
    total, non_embedding = flops.param_counts(model_def)
    self.info = {
        "params": total, "non_embedding_params": non_embedding, "vocab_size": layout.vocab_size,
        "batch_size": batch_size, "length": length, "devices": len(devices), "mesh": dict(mesh.shape),
        "dtype": m.dtype, "remat_policy": m.remat_policy, "scan_layers": bool(m.scan_layers),
        "attention_impl": m.attention_impl, "max_image_tokens": int(m.max_image_tokens),
        "image_tokens_per_row": self.image_tokens,
        "flops_per_step": flops.train_flops_per_step(model_def, m, layout.vocab_size, batch_size, length),
    }

  def step(self, timed: bool = True):
    started = time.perf_counter()
    self.state, self.metrics = jax.block_until_ready(self.compiled(self.state, self.batch))
    if timed:
      self.times.append(time.perf_counter() - started)

  def profile(self, trace_dir: str) -> str:
    """Traces one step into `trace_dir`; returns the compiled HLO (to name the traced ops)."""
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      self.step(timed=False)
    return self.compiled.as_text()

  def result(self) -> dict:
    """The row: best-of step time (contention only ever adds time), median too, and rates from the best."""
    metrics = jax.device_get(self.metrics)
    step_s = min(self.times)
    return dict(self.info, compile_s=self.compile_s, transfer_s=self.transfer_s, step_times_s=self.times,
                step_s=step_s, median_step_s=float(np.median(self.times)), steps_per_s=1.0 / step_s,
                tokens_per_s=self.info["batch_size"] * self.info["length"] / step_s,
                flop_per_s=self.info["flops_per_step"] / step_s, loss=float(metrics["loss"]),
                finite=bool(metrics["finite"] >= 1))


def measure(config, *, batch_size: int, length: int, warmup: int, steps: int, **kwargs) -> dict:
  """Compiles and times the real train step of `config` on random features; returns one row."""
  runner = Runner(config, batch_size=batch_size, length=length, **kwargs)
  for _ in range(warmup):
    runner.step(timed=False)
  for _ in range(steps):
    runner.step()
  return runner.result()


def measure_interleaved(runners, warmup: int, steps: int) -> list:
  """Times several runners step by step in turn, so that a burst of load hits them all alike."""
  for _ in range(warmup):
    for r in runners:
      r.step(timed=False)
  for _ in range(steps):
    for r in runners:
      r.step()
  return [r.result() for r in runners]


def matmul_peak(dtype: str, sizes, num_devices: int) -> dict:
  """{size: FLOP/s} of XLA's dense matmuls (uncached: the bench measures before and after)."""
  return {int(s): flops.measure_host_flops.__wrapped__(dtype, int(s), 5, num_devices) for s in sizes}


def pipeline_tokens_per_s(path: str, length: int) -> dict:
  """{mixture: tokens/s (wall)} of bench/input_pipeline.py at this length, from its JSON."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    results = json.load(f)["results"]
  return {f"{r['mixture']} ({r['episodes_from']})": r["tokens_per_s"] for r in results
          if r["sequence_length"] == length}


def machine() -> dict:
  device = jax.local_devices()[0]
  return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "jax": jax.__version__, "device_kind": device.device_kind, "platform": device.platform,
          "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}


def run_rows(presets, batch_sizes, peak_of) -> tuple[list, dict]:
  """The preset, cpu and fake-device rows, then the ablations of --ablate against its cpu row.

  Returns (rows, {row name: HLO of its traced step}) with each row's MFU against `peak_of`.
  """
  rows, traced = [], {}
  cpu = parse_overrides(_CPU.value)

  def steps_for(runner):
    big = runner.info["params"] > _BIG.value
    return (1, 1) if big else (_WARMUP.value, _STEPS.value)

  def finish(preset, variant, row):
    row.update(preset=preset, variant=variant, peak_flop_per_s=peak_of(row["dtype"], row["devices"]))
    row["mfu"] = row["flop_per_s"] / row["peak_flop_per_s"]
    logging.info("%s", json.dumps(row))
    rows.append(row)

  def attempt(preset, variant, fn):
    logging.info("timing %s / %s", preset, variant)
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory: reported, not estimated)
      logging.exception("%s / %s failed", preset, variant)
      rows.append({"preset": preset, "variant": variant, "error": f"{type(e).__name__}: {e}"[:300]})
      return None

  def runner(preset, overrides=None, **kwargs):
    return Runner(load_config(preset, **(overrides or {})), batch_size=batch_sizes[preset],
                  length=_LENGTH.value, **kwargs)

  def trace(name, r):
    if _PROFILE.value:
      traced[name] = r.profile(os.path.join(TRACE_DIR, name.split(" ")[0]))

  def alone(preset, variant, overrides=None, **kwargs):
    r = attempt(preset, variant, lambda: runner(preset, overrides, **kwargs))
    if r is not None:
      finish(preset, variant, measure_interleaved([r], *steps_for(r))[0])
    return r

  for preset in presets:
    alone(preset, "preset")
    if preset == "tiny_demo" and _FAKE.value and jax.local_device_count() >= 8:
      alone(preset, "preset, 8 fake devices (2x2x2)", devices=jax.local_devices()[:8], mesh_shape=(2, 2, 2))
    if preset != "tiny_demo" and preset != _ABLATE.value:
      alone(preset, "cpu", cpu)
  if not _ABLATE.value:
    return rows, traced
  base = alone(_ABLATE.value, "cpu", cpu)
  if base is None:
    return rows, traced
  if "cpu" in PROFILED:
    trace("cpu", base)
  for name, overrides, gather in ABLATIONS:
    if _ONLY.value and not any(name.startswith(prefix) for prefix in _ONLY.value):
      continue
    variant = attempt(_ABLATE.value, name, lambda: runner(_ABLATE.value, {**cpu, **overrides},
                                                          gather_images=gather))
    if variant is None:
      continue
    base.times = []
    base_row, row = measure_interleaved([base, variant], 1, _ABLATION_STEPS.value)
    finish(_ABLATE.value, name, row)
    row["cpu_row_step_s"] = base_row["step_s"]  # the baseline's best step timed alongside this one
    if name in PROFILED:
      trace(name, variant)
    del variant
  return rows, traced


def main(argv):
  del argv
  from bench import train_step_report as report  # pylint: disable=g-import-not-at-top
  info = machine()
  batch_sizes = {p: int(b) for p, b in (x.split(":") for x in _BATCH.value)}
  presets = [p for p in _PRESETS.value]
  for p in presets:
    batch_sizes.setdefault(p, 1)
  peaks = {}  # (dtype, devices) -> {"before": {size: flop/s}, "after": ...}

  @functools.cache
  def peak_of(dtype, devices):
    peaks[f"{dtype}/{devices}"] = {"before": matmul_peak(dtype, _SIZES.value, devices)}
    return max(peaks[f"{dtype}/{devices}"]["before"].values())

  for dtype in ("float32", "bfloat16"):
    peak_of(dtype, 1)
  shutil.rmtree(TRACE_DIR, ignore_errors=True)
  rows, traced = run_rows(presets, batch_sizes, peak_of)
  for key, peak in peaks.items():
    dtype, devices = key.split("/")
    peak["after"] = matmul_peak(dtype, _SIZES.value, int(devices))
  # MFU against the best peak seen in the run (before or after): never flattering.
  for row in rows:
    if "error" not in row:
      both = peaks[f"{row['dtype']}/{row['devices']}"]
      row["peak_flop_per_s"] = max(max(both["before"].values()), max(both["after"].values()))
      row["mfu"] = row["flop_per_s"] / row["peak_flop_per_s"]
  pipeline = pipeline_tokens_per_s(_PIPELINE.value, _LENGTH.value)
  heads = load_config(_ABLATE.value).model.num_heads if _ABLATE.value else 0
  profiles = {name: report.profile_summary(os.path.join(TRACE_DIR, name.split(" ")[0]), hlo, heads)
              for name, hlo in traced.items()}
  info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
  result = {"machine": info, "length": _LENGTH.value, "matmul_peaks": peaks, "input_pipeline_tokens_per_s": pipeline,
            "rows": rows, "profiles": profiles, "cpu_overrides": _CPU.value,
            "ablated": _ABLATE.value}
  results_io.write_results(_OUT.value, "train_step", result, report.markdown(result))


if __name__ == "__main__":
  app.run(main)
