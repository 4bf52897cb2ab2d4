"""Training metrics: reduced over each logging interval, written through clu's metric writers
(TensorBoard under `<workdir>/tensorboard`), with clu's ReportProgress and a progress line.

Only process 0 writes; every process computes the same numbers. Throughput excludes the first step
(compilation). The progress line is ours because ReportProgress reports only steps/s and an ETA (to
the work unit's notes), not tokens/s or MFU, which is what a scaling run is judged by.
"""

import sys
import time
from typing import Mapping, Sequence

from clu import metric_writers
from clu import periodic_actions
import jax
import numpy as np

from gato_jax.model.metrics import reduce_metrics


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _si(x: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.1f}{unit}"
  return f"{x:.1f}"


def summarize(step_metrics: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
  """Per-step host metrics of one interval -> one value each (means of the steps, sums of counts)."""
  stacked = {name: np.array([float(m[name]) for m in step_metrics]) for name in step_metrics[0]}
  out = {name: float(value) for name, value in reduce_metrics(stacked, xp=np).items()}
  out["skipped_steps"] = float(sum(1 for m in step_metrics if float(m.get("finite", 1.0)) < 1))
  out.pop("finite", None)
  return out


class MetricsLogger:
  """Turns each interval's step metrics into throughput, MFU and ETA; prints and records them."""

  def __init__(self, workdir: str | None, *, num_train_steps: int, tokens_per_step: int,
               flops_per_step: float, peak_flops: float):
    self._num_train_steps = num_train_steps
    self._tokens_per_step = tokens_per_step
    self._flops_per_step = flops_per_step
    self._peak_flops = peak_flops  # of all devices together
    self._is_writer = jax.process_index() == 0
    self._writer = None
    if self._is_writer and workdir:
      self._writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(f"{workdir}/tensorboard"))
    self._progress = periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=self._writer,
                                                     every_steps=None, every_secs=0.0)  # each log
    self._timer_step = None
    self._timer_start = None

  def start_timer(self, step: int) -> None:
    """Throughput is measured from here (call after the first step has finished compiling)."""
    self._timer_step, self._timer_start = step, time.perf_counter()
    self._progress(step)  # ReportProgress measures from its first call too

  def log(self, step: int, step_metrics: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    scalars = summarize(step_metrics)
    now = time.perf_counter()
    if self._timer_start is not None and step > self._timer_step:
      steps_per_s = (step - self._timer_step) / (now - self._timer_start)
      scalars["steps_per_s"] = steps_per_s
      scalars["tokens_per_s"] = steps_per_s * self._tokens_per_step
      if self._peak_flops:
        scalars["mfu"] = steps_per_s * self._flops_per_step / self._peak_flops
      scalars["eta_s"] = (self._num_train_steps - step) / steps_per_s
      self._timer_step, self._timer_start = step, now
    if self._writer is not None:
      self._writer.write_scalars(step, {f"train/{name}": value for name, value in scalars.items()})
    self._progress(step)
    if self._is_writer:
      print(self.progress_line(step, scalars), flush=True, file=sys.stdout)
    return scalars

  def progress_line(self, step: int, s: Mapping[str, float]) -> str:
    parts = [f"step {step}/{self._num_train_steps} ({100 * step / self._num_train_steps:.0f}%)",
             f"loss {s['loss']:.4f}"]
    for name in ("text_accuracy", "action_accuracy"):
      if name in s:
        parts.append(f"{name.split('_')[0]}_acc {s[name]:.3f}")
    parts += [f"lr {s['learning_rate']:.2e}", f"gnorm {s['grad_norm']:.3f}"]
    if "steps_per_s" in s:
      parts += [f"{s['steps_per_s']:.2f} steps/s", f"{_si(s['tokens_per_s'])} tok/s"]
      if "mfu" in s:
        parts.append(f"MFU {100 * s['mfu']:.1f}%")
      parts.append(f"ETA {_duration(s['eta_s'])}")
    if s.get("skipped_steps"):
      parts.append(f"skipped {int(s['skipped_steps'])} non-finite")
    return " | ".join(parts)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
