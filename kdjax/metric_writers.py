"""Run logging: DIR/metrics.jsonl, TensorBoard events, and a console progress line.

Only process 0 writes. Every JSON line carries `step`; values are plain floats.
"""

import json
import os
import sys
import time

import jax
from absl import logging


class MetricWriter:

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self._jsonl = self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({k: (float(v) if not isinstance(v, (str, int)) else v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()


def _summary_writer_class():
  """tensorboardX's SummaryWriter (TensorBoard event files without TensorFlow), imported without
  torch: tensorboardX imports torch when installed (1.6 s per process here) only to accept torch
  tensors, which kdjax never passes. Its torch code paths import torch lazily if ever needed."""
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX allows
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Progress:
  """steps/s, images/s and ETA over the steps since the last report."""

  def __init__(self, total_steps: int, global_batch: int, start_step: int):
    self.total, self.batch = total_steps, global_batch
    self._t, self._step = time.perf_counter(), start_step

  def report(self, step: int, metrics: dict) -> dict:
    now = time.perf_counter()
    steps_per_s = (step - self._step) / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    eta = (self.total - step) / max(steps_per_s, 1e-9)
    shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    logging.info("step %d/%d | %s | %.2f steps/s | %.0f img/s | ETA %s", step, self.total, shown,
                 steps_per_s, steps_per_s * self.batch, hms(eta))
    return {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * self.batch}


def hms(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
