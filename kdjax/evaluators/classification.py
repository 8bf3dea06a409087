"""Classification evaluator: accuracy and CE over each eval set, each example counted once; with
teachers, also the fidelity metrics big_vision's distillation evaluators report: the teachers'
accuracy, the student-teacher top-1 and top-5 agreement and KL(teacher || student).

Sums are accumulated on device over padded batches whose padding has mask 0 (scenic's
(sum, count) pattern), then divided once on the host. float32 sums of 0/1 are exact below 2**24
examples. The teachers are frozen, so their probabilities on an eval set are computed once per
run (kept on the device, [N_batches][B, C] float32 per eval set) and fed to every later
evaluation of the student. The evaluator owns its jitted functions and counts their FLOPs.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import logging

from kdjax import steps


def teacher_probabilities(predict_step, teacher_vars, eval_input) -> list:
  """The teachers' task probabilities, one float32 [B, C] device array per eval batch (padding
  rows included: the eval step masks them)."""
  return [predict_step(teacher_vars, batch["image"]) for batch in eval_input.batches()]


def evaluate(eval_step, variables, eval_input, teacher_probs=None) -> dict:
  totals = None
  for i, batch in enumerate(eval_input.batches()):
    if teacher_probs is not None:
      batch["teacher_probs"] = teacher_probs[i]
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  out = {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss"]) / count,
         "count": int(count)}
  if "agree" in totals:
    out["teacher_accuracy"] = float(totals["teacher_correct"]) / count
    out["agreement"] = float(totals["agree"]) / count
    out["agreement_top5"] = float(totals["agree_top5"]) / count
    out["kl"] = float(totals["kl"]) / count
  return out


class Evaluator:
  """Evaluates a student on every eval set: `evaluator(step, variables)` -> {"set/metric": v}.

  predict(variables, images) -> logits; `variables_sharding`: the sharding of what `predict`
  reads; `teacher_predict(teacher_vars, images)` -> the teachers' task probabilities [B, C]
  (None: no teacher metrics). `abstract_batch(size, with_mask)` gives the FLOP count's inputs."""

  def __init__(self, predict: Callable, evals: dict, num_classes: int, variables_sharding,
               batch_sharding, replicated, eval_batch_size: int, abstract_batch: Callable,
               teacher_predict: Callable | None = None, teacher_vars=(), teacher_sharding=None):
    self.evals, self.teacher_vars = evals, teacher_vars
    self.step = jax.jit(steps.make_eval_step(predict, num_classes),
                        in_shardings=(variables_sharding, batch_sharding),
                        out_shardings=replicated)
    self.predict_teacher = None if teacher_predict is None else jax.jit(
        lambda v, images: teacher_predict(v, images).astype(jnp.float32),
        in_shardings=(teacher_sharding, batch_sharding), out_shardings=batch_sharding)
    self._batch = abstract_batch(eval_batch_size, with_mask=True)
    self._flops_per_batch = self._teacher_flops_per_batch = None
    self._teacher_probs = {}  # eval set -> the teachers' probabilities (computed once per run)

  def __call__(self, step: int, variables, add_flops: Callable = lambda f: None) -> dict:
    if self._flops_per_batch is None:
      self._flops_per_batch = steps.xla_flops(self.step, variables, self._batch)
    out = {}
    for name, ev in self.evals.items():
      if self.predict_teacher is not None and name not in self._teacher_probs:
        self._teacher_probs[name] = teacher_probabilities(self.predict_teacher, self.teacher_vars,
                                                          ev)
        if self._teacher_flops_per_batch is None:
          self._teacher_flops_per_batch = steps.xla_flops(
              self.predict_teacher, self.teacher_vars, self._batch["image"])
        add_flops(ev.num_batches * self._teacher_flops_per_batch)
      for k, v in evaluate(self.step, variables, ev, self._teacher_probs.get(name)).items():
        out[f"{name}/{k}"] = v
      add_flops(self._flops_per_batch * ev.num_batches)
    logging.info("eval at step %d: %s", step, out)
    return out
