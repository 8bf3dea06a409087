"""A run's cost: XLA's FLOP count of its steps and the wall time, kept across resumes.

FLOPs come from XLA's cost analysis of the lowered steps (global, unpartitioned), never from
timing. With a teacher cache the same train step is also counted with the teachers run online,
so a run reports what the cache saved; the cache's own build is counted once.
"""

import copy
import time

import jax
import numpy as np
from absl import logging

from kdjax import steps


def abstract_batch(size: int, image_shape, sharding, with_mask: bool = False,
                   cache_arrays: dict | None = None) -> dict:
  """The abstract train (or eval: `with_mask`) batch of `size` examples; with a teacher cache,
  its per-example arrays too."""
  def spec(shape, dtype=np.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  batch = {"image": spec((size, *image_shape)), "label": spec((size,), np.int32)}
  if with_mask:
    batch["mask"] = spec((size,))
  else:  # a train batch's positions (kdjax.data.pipeline.TrainInput)
    batch["index"] = spec((size,), np.int32)
  for k, v in (cache_arrays or {}).items():
    batch[k] = spec((size, *v.shape[2:]))
  return batch


class Accounting:
  """The cost record of a run: "wall_time_s", "train_flops", "eval_flops" (resumed from the
  checkpoint's record), the FLOPs per train step and, with a cache, its counterfactual."""

  def __init__(self, cost: dict | None = None):
    self.cost = dict(cost or {"wall_time_s": 0.0, "train_flops": 0.0, "eval_flops": 0.0})
    self.flops_per_step = 0.0
    self._t_start, self._wall_before = time.perf_counter(), self.cost["wall_time_s"]

  def count_train_step(self, train_step, args, batch_size: int) -> None:
    """XLA's count of one train step; `args`: its arguments with an abstract batch."""
    self.flops_per_step = steps.xla_flops(train_step, *args)
    logging.info("XLA cost analysis: %.3g FLOPs per train step (global batch %d)",
                 self.flops_per_step, batch_size)

  def count_cache(self, make_step, distiller, args, cache_cost: dict) -> None:
    """What the train step would cost with the cached teachers run online
    (`make_step(distiller)` -> the jitted step; `args`: its arguments, teachers' variables
    included), and the cache's build."""
    online = copy.copy(distiller)
    online.cached = False
    self.cost["online_teacher_flops_per_train_step"] = steps.xla_flops(make_step(online), *args)
    self.cost["teacher_cache_flops"] = cache_cost["flops"]
    self.cost["teacher_cache_wall_time_s"] = cache_cost["wall_time_s"]
    logging.info("cached teachers: %.3g FLOPs per step instead of %.3g online",
                 self.flops_per_step, self.cost["online_teacher_flops_per_train_step"])

  def add_eval(self, flops: float) -> None:
    self.cost["eval_flops"] += flops

  def record(self, step: int) -> dict:
    """The record at `step` (what a checkpoint stores)."""
    self.cost["wall_time_s"] = self._wall_before + time.perf_counter() - self._t_start
    self.cost["train_flops"] = self.flops_per_step * step
    self.cost["flops_per_train_step"] = self.flops_per_step
    return self.cost

  def final(self, step: int) -> dict:
    """The finished run's record, with "total_flops"."""
    self.record(step)
    self.cost["total_flops"] = self.cost["train_flops"] + self.cost["eval_flops"]
    return self.cost
