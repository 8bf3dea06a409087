"""The eval step's fidelity sums (kdjax/steps.py make_eval_step, reported by
kdjax/evaluators/classification.py) against NumPy, padding rows (mask 0) ignored."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import steps


def _numpy_sums(logits, probs, labels, mask):
  keep = mask > 0
  logits, probs, labels = logits[keep], probs[keep], labels[keep]
  student, teacher = logits.argmax(-1), probs.argmax(-1)
  k = min(5, logits.shape[1])
  top = np.argsort(-logits, -1)[:, :k]
  log_s = logits - logits.max(-1, keepdims=True)
  log_s = log_s - np.log(np.exp(log_s).sum(-1, keepdims=True))
  with np.errstate(divide="ignore", invalid="ignore"):
    plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
  return {"count": keep.sum(), "correct": np.sum(student == labels),
          "teacher_correct": np.sum(teacher == labels), "agree": np.sum(teacher == student),
          "agree_top5": np.sum(np.any(top == teacher[:, None], -1)),
          "kl": np.sum(plogp.sum(-1) - (probs * log_s).sum(-1))}


@pytest.mark.parametrize("num_classes", [3, 12])
def test_fidelity_sums_match_numpy_with_padding(num_classes):
  rng = np.random.default_rng(num_classes)
  b = 16
  logits = rng.normal(size=(b, num_classes)).astype(np.float32) * 3
  probs = rng.dirichlet(np.full(num_classes, 0.3), size=b).astype(np.float64)
  probs[0, :] = 0.0
  probs[0, 1] = 1.0  # a one-hot teacher row: 0 log 0 = 0
  labels = rng.integers(0, num_classes, b).astype(np.int32)
  mask = np.ones(b, np.float32)
  mask[-3:] = 0  # padding
  step = jax.jit(steps.make_eval_step(lambda v, x: x, num_classes))
  batch = {"image": jnp.asarray(logits), "label": jnp.asarray(labels), "mask": jnp.asarray(mask),
           "teacher_probs": jnp.asarray(probs, jnp.float32)}
  got = jax.device_get(step({}, batch))
  want = _numpy_sums(logits.astype(np.float64), probs, labels, mask)
  for key, value in want.items():
    assert float(got[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-5), key
  if num_classes <= 5:
    assert float(got["agree_top5"]) == float(got["count"])  # top-5 of 3 classes: all
  no_teacher = jax.device_get(jax.jit(steps.make_eval_step(lambda v, x: x, num_classes))(
      {}, {k: v for k, v in batch.items() if k != "teacher_probs"}))
  assert set(no_teacher) == {"correct", "loss", "count"}
