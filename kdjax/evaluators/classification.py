"""Classification evaluator: accuracy and CE over an eval set, each example counted once; with
teachers, also the teachers' accuracy and the student-teacher top-1 agreement.

Sums are accumulated on device over padded batches whose padding has mask 0 (scenic's
(sum, count) pattern), then divided once on the host. float32 sums of 0/1 are exact below 2**24
examples. The teachers are frozen, so their predictions on an eval set are computed once
(`teacher_predictions`) and fed to every later evaluation of the student.
"""

import jax
import jax.numpy as jnp


def teacher_predictions(predict_step, teacher_vars, eval_input) -> list:
  """The teachers' predicted class per example, one device array per eval batch."""
  return [predict_step(teacher_vars, batch["image"]) for batch in eval_input.batches()]


def evaluate(eval_step, variables, eval_input, teacher_preds=None) -> dict:
  totals = None
  for i, batch in enumerate(eval_input.batches()):
    if teacher_preds is not None:
      batch["teacher_pred"] = teacher_preds[i]
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  out = {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss"]) / count,
         "count": int(count)}
  if "agree" in totals:
    out["teacher_accuracy"] = float(totals["teacher_correct"]) / count
    out["agreement"] = float(totals["agree"]) / count
  return out
