"""Will each preset fit its TPU? Every preset compiled by the real TPU compiler (libtpu, no TPU) for its
target and neighbouring slices: memory per chip, the largest batch per chip that fits, compile time,
collective bytes per step, and a roofline estimate of step time and MFU.

    python bench/fit_table.py                      # every row below (about 30 min on 2 cores)
    python bench/fit_table.py --rows=gato_1_2b@v5e:16x16,gato_1_2b@v5e:16x16@2

Batch search: the train step is compiled at the preset's batch per chip (or 1), then at twice that;
peak bytes are close to linear in the batch, so the line through the two predicts the largest batch
that fits, which is compiled to confirm (stepping down until it fits). The acting step and the
evaluation forward are compiled once, at the batch found.

Roofline (an ESTIMATE, marked so in every row): step time = max(compute, HBM, communication), where
compute = the model's FLOPs (gato_jax/training/flops.py, times 4/3 under full remat; XLA's cost
analysis counts a scanned loop's body once, not once per layer, so its FLOP count is not used) over
the chips' published peak bf16 FLOP/s; HBM = the bytes the compiled program must at least touch once
(arguments + outputs + twice its temporaries) over the chip's HBM bandwidth; communication = the
collectives' ring wire bytes per chip over the chip's ICI bandwidth, plus, across slices, the
gradient all-reduce of each chip's state shard over its share of the data-centre network.
Chip figures: gato_jax/aot/topology.py (Google's published per-chip numbers).
Writes bench/results/fit_table.json and .md.
"""

import json
import os
import runpy
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import results_io  # noqa: E402

from gato_jax.aot import check, topology  # noqa: E402

# (preset, topology, slices): every preset on its intended target and neighbouring slices.
ROWS = (
    ("tiny_demo", "v5e:2x2", 1), ("tiny_demo", "v4:2x2x1", 1),
    ("gato_79m", "v5e:2x2", 1), ("gato_79m", "v4:2x2x1", 1), ("gato_79m", "v4:2x2x4", 1),
    ("gato_364m", "v5e:4x4", 1), ("gato_364m", "v5p:4x4x4", 1),
    ("gato_1_2b", "v5e:16x16", 1), ("gato_1_2b", "v5p:4x4x4", 1), ("gato_1_2b", "v5e:16x16", 2),
)
REMAT_FLOPS = {"none": 1.0, "full": 4 / 3}  # dots-saveable policies recompute no matmul

flags.DEFINE_list("rows", [], "preset@topology[@slices] rows to run (default: every row)")
flags.DEFINE_string("out_dir", "bench/results", "where fit_table.json / .md go")
flags.DEFINE_string("name", "fit_table", "results file name")
flags.DEFINE_bool("markdown_only", False, "rewrite the markdown from the JSON and exit")
flags.DEFINE_bool("keep_existing", False, "keep the rows already in <out_dir>/<name>.json that this run "
                  "does not redo")
FLAGS = flags.FLAGS


def preset(name: str, num_slices: int = 1):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", f"{name}.py")
  config = runpy.run_path(path)["get_config"]()
  # The preset's own data axis (DCN carries it across slices, so it becomes a multiple of them) and FSDP
  # over the rest of the chips.
  data = max(int(config.mesh.data), 1)
  config.mesh.data = data if data % num_slices == 0 else data * num_slices
  config.mesh.fsdp, config.mesh.tensor, config.mesh.dcn_axis = -1, 1, "data"
  return config


def _try(config, target, devices, per_chip, which=("train_step",)):
  """(fit report or None, peak bytes needed) at `per_chip` sequences per chip."""
  config.batch_size = int(per_chip * target.chips)
  try:
    fit = check.compile_for(config, target, which=which, devices=devices)
    return fit, fit.programs["train_step"].peak_bytes
  except check.DoesNotFit as e:
    return None, e.needed_bytes


def largest_batch(config, target, devices) -> tuple[int, list, object]:
  """The largest batch per chip whose train step fits (to within 1/16, at most 8 compiles), every
  (per chip, GiB, fits) tried, and the train step's report at that batch."""
  fits = {}

  def attempt(per_chip):
    if per_chip not in fits:
      fits[per_chip] = _try(config, target, devices, per_chip)
    return fits[per_chip]

  start = max(1, int(config.batch_size // target.chips))
  while attempt(start)[0] is None and start > 1:  # too big: halve until it fits
    start //= 2
  if attempt(start)[0] is None:
    return 0, _tried(fits), None
  peak, peak2 = attempt(start)[1], attempt(2 * start)[1]
  slope = max((peak2 - peak) / start, 1.0)
  guess = max(start + 1, int(start + (target.chip.hbm_bytes * 0.97 - peak) // slope))
  for _ in range(6):
    lo = max(b for b, (f, _) in fits.items() if f is not None)
    hi = min((b for b, (f, _) in fits.items() if f is None), default=None)
    if hi is not None and hi - lo <= max(1, lo // 16):
      break
    if not (lo < guess and (hi is None or guess < hi)):
      guess = (lo + hi) // 2 if hi is not None else 2 * lo
    attempt(guess)
    guess = -1  # after the line's guess, bisect
  best = max(b for b, (f, _) in fits.items() if f is not None)
  return best, _tried(fits), fits[best][0].programs["train_step"]


def _tried(fits) -> list:
  return [(b, peak / check.GIB, f is not None) for b, (f, peak) in fits.items()]


def roofline(fit: check.FitReport, target: topology.Target) -> dict:
  chip = target.chip
  train = fit.programs["train_step"]
  compute_s = fit.model_flops_per_step * REMAT_FLOPS.get(fit.remat_policy, 1.0) / (fit.chips * chip.peak_bf16_flops)
  hbm_s = (train.argument_bytes + train.output_bytes + 2 * train.temp_bytes) / chip.hbm_bytes_per_s
  wire = sum(c["wire_bytes"] for c in train.collectives.values())
  ici_s = wire / chip.ici_bytes_per_s
  dcn_s = 0.0
  if target.num_slices > 1:  # each chip's f32 gradient shard all-reduced across the slices
    shard = 4 * fit.parameters / target.chips_per_slice
    dcn_s = 2 * shard * (target.num_slices - 1) / target.num_slices / chip.dcn_bytes_per_s_per_chip
  step_s = max(compute_s, hbm_s, ici_s + dcn_s)
  return {"estimate": True, "compute_s": compute_s, "hbm_s": hbm_s, "ici_s": ici_s, "dcn_s": dcn_s,
          "step_s": step_s, "mfu": fit.model_flops_per_step / (step_s * fit.chips * chip.peak_bf16_flops),
          "bound": max((("compute", compute_s), ("HBM", hbm_s), ("communication", ici_s + dcn_s)),
                       key=lambda kv: kv[1])[0]}


def run_row(name: str, topology_name: str, slices: int) -> dict:
  target = topology.parse(topology_name, slices)
  devices = topology.compile_only_devices(target)
  config = preset(name, slices)
  preset_per_chip = config.batch_size / target.chips
  started = time.perf_counter()
  best, tried, train = largest_batch(config, target, devices)
  row = {"preset": name, "target": target.label, "chips": target.chips, "hbm_gib": target.chip.hbm_bytes / check.GIB,
         "preset_batch": int(preset_per_chip * target.chips), "largest_batch_per_chip": best, "tried": tried}
  if best:
    config.batch_size = best * target.chips
    fit = check.compile_for(config, target, config_name=name, devices=devices,
                            which=("act_step", "eval_forward"))
    fit.programs = {"train_step": train, **fit.programs}
    row.update(fit=fit.to_json(), roofline=roofline(fit, target))
    print(check.describe(fit), flush=True)
  row["seconds"] = round(time.perf_counter() - started, 1)
  return row


def markdown(rows: list[dict]) -> str:
  lines = ["| preset | target | chips | preset's batch / chip: GiB | largest batch / chip | train step GiB / chip (of HBM) | act GiB | "
           "eval GiB | compile s (train) | collectives / step / chip | est. s: compute / HBM / comms | "
           "est. step s | est. MFU ceiling |",
           "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['preset']} | {r['target']} | {r['chips']} | error: {r['error'][:120]} | | | | | | | | | |")
      continue
    if not r["largest_batch_per_chip"]:
      lines.append(f"| {r['preset']} | {r['target']} | {r['chips']} | | 0 (does not fit at 1) | | | | | | | | |")
      continue
    p, roof = r["fit"]["programs"], r["roofline"]
    gib = lambda name: p[name]["peak_bytes"] / check.GIB
    comms = ", ".join(f"{kind} {c['bytes'] / 2**20:.0f} MiB" for kind, c in p["train_step"]["collectives"].items()
                      if c["bytes"] >= 2**20)
    first = r["tried"][0]
    at_preset = f"{first[0]}: {first[1]:.2f}" + ("" if first[2] else " (does not fit)")
    mesh = r["fit"]["mesh"]
    target = f"{r['target']} ({mesh['data']}x{mesh['fsdp']}x{mesh['tensor']})"
    lines.append(f"| {r['preset']} | {target} | {r['chips']} | {at_preset} | {r['largest_batch_per_chip']} | "
                 f"{gib('train_step'):.2f} ({r['hbm_gib']:.0f}) | {gib('act_step'):.2f} | {gib('eval_forward'):.2f} | "
                 f"{p['train_step']['compile_s']:.0f} | {comms} | {roof['compute_s']:.3f} / {roof['hbm_s']:.3f} / "
                 f"{roof['ici_s'] + roof['dcn_s']:.3f} | {roof['step_s']:.3f} | {roof['mfu']:.0%} |")
  lines.append("\nTarget: the topology and the mesh data x fsdp x tensor. Memory, compile time and collectives are the TPU compiler's own (libtpu on a 2-core CPU "
               "machine). The last three columns are ESTIMATES (roofline, module docstring) from published "
               "chip figures, never measured on a TPU: the step time is the largest of the three bounds, "
               "and the MFU ceiling is what that would give (a compute-bound row is at 1 / remat "
               "recompute by construction: real MFU is lower). The largest batch is the largest that compiled "
               "within HBM; a row's JSON lists every batch tried (a row whose line-fit guess fitted first "
               "try is a lower bound within a few percent). Regenerate: `python bench/fit_table.py`.")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  chosen = ROWS
  if FLAGS.rows:
    chosen = []
    for spec in FLAGS.rows:  # preset@topology[@slices]
      name, topo, *slices = spec.split("@")
      chosen.append((name, topo, int(slices[0]) if slices else 1))
  rows = []
  path = os.path.join(FLAGS.out_dir, f"{FLAGS.name}.json")
  if FLAGS.markdown_only:
    with open(path) as f:
      rows = json.load(f)["rows"]
    results_io.write_results(FLAGS.out_dir, FLAGS.name, {"rows": rows}, markdown(rows))
    return
  if FLAGS.keep_existing and os.path.exists(path):
    with open(path) as f:
      redo = {(n, topology.parse(t, s).label) for n, t, s in chosen}
      rows = [r for r in json.load(f)["rows"] if (r["preset"], r["target"]) not in redo]
  for name, topo, slices in chosen:
    print(f"== {name} on {slices}x {topo}" if slices > 1 else f"== {name} on {topo}", flush=True)
    try:
      rows.append(run_row(name, topo, slices))
    except Exception as e:  # pylint: disable=broad-except  # one row's failure is that row's result
      rows.append({"preset": name, "target": topology.parse(topo, slices).label, "error": str(e)[:500],
                   "largest_batch_per_chip": 0, "chips": topology.parse(topo, slices).chips})
    results_io.write_results(FLAGS.out_dir, FLAGS.name, {"rows": rows}, markdown(rows), echo=False)
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
