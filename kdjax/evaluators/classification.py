"""Classification evaluator: accuracy and CE over an eval set, each example counted once.

Sums (correct, loss, count) are accumulated on device over padded batches whose padding has
mask 0 (scenic's (sum, count) pattern), then divided once on the host. float32 sums of 0/1 are
exact below 2**24 examples.
"""

import jax
import jax.numpy as jnp


def evaluate(eval_step, variables, eval_input) -> dict:
  totals = None
  for batch in eval_input.batches():
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss"]) / count,
          "count": int(count)}
