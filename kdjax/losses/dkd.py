"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, arXiv 2203.08679),
as mdistiller computes it (megvii-research/mdistiller, mdistiller/distillers/DKD.py:8-32).

KD's KL splits into TCKD, the KL between the binary distributions (p_gt, 1 - p_gt) of teacher and
student, and NCKD, the KL between their distributions over the non-target classes (softmax with
the target class removed). DKD = alpha * TCKD + beta * NCKD; `dkd` returns the two terms, each
already multiplied by T^2 and averaged over the batch (kl_div summed, / batch size: DKD.py:16-31),
and the caller weighs them.

Numerics that differ from the reference (not the values): mdistiller takes torch.log of the
binary probabilities (DKD.py:15, -inf if p_gt underflows) and removes the target from NCKD by
subtracting 1000 from its logit/T (DKD.py:21-26, whose exp underflows to exactly 0 in float32 and
float64); here both are computed in log space with the target class excluded exactly.

DKD_DEFAULTS: mdistiller's CIFAR-100 configuration, mdistiller/engine/cfg.py:162-167 (CE weight 1,
alpha 1, beta 8, T 4, warm-up 20 epochs: the DKD loss is scaled by min(epoch / warmup, 1),
DKD.py:72). Per teacher-student pair configs/cifar100/dkd/*.yaml override BETA: 2.0 for
res56_res20 and res110_res32, 6.0 for vgg13_mv2, vgg13_vgg8, wrn40_2_wrn_16_2 and
wrn40_2_wrn_40_1, the default 8 elsewhere. With logit standardisation (Sun et al., arXiv
2403.01427, see kdjax.losses.kd) their tools/train.py:115-118 multiplies alpha and beta by 9 and
sets T = 2.
"""

import jax
import jax.numpy as jnp

from kdjax.losses import kd

DKD_DEFAULTS = {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                "warmup_epochs": 20}
_NEG = -1e30  # "minus infinity" for an excluded class: exp underflows to 0, no inf - inf


def dkd(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
        temperature: float = 4.0, standardize: bool = False,
        mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(TCKD, NCKD), both times T^2, averaged over the batch (or over the rows with mask == 1).

  student_logits, teacher_logits [B, C]; labels int [B] (any value, e.g. -1, where mask is 0);
  standardize: z-score both logits per example first (kdjax.losses.kd.standardize).
  """
  t = temperature
  s = student_logits.astype(jnp.float32)
  tl = teacher_logits.astype(jnp.float32)
  if standardize:
    s, tl = kd.standardize(s), kd.standardize(tl)
  s, tl = s / t, tl / t
  num_classes = s.shape[-1]
  gt = jax.nn.one_hot(jnp.clip(labels, 0, num_classes - 1), num_classes, dtype=bool)

  def parts(z):
    """log p_gt, log(1 - p_gt), log-probabilities over the non-target classes."""
    lse_all = jax.nn.logsumexp(z, axis=-1)
    others = jnp.where(gt, _NEG, z)
    lse_other = jax.nn.logsumexp(others, axis=-1)
    log_gt = jnp.sum(jnp.where(gt, z, 0.0), axis=-1) - lse_all
    return log_gt, lse_other - lse_all, others - lse_other[:, None]

  s_gt, s_other, s_nc = parts(s)
  t_gt, t_other, t_nc = parts(tl)
  tckd = (jnp.exp(t_gt) * (t_gt - s_gt) + jnp.exp(t_other) * (t_other - s_other))
  nckd = jnp.sum(jnp.where(gt, 0.0, jnp.exp(t_nc) * (t_nc - s_nc)), axis=-1)
  if mask is None:
    return t * t * jnp.mean(tckd), t * t * jnp.mean(nckd)
  m = mask.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(m), 1.0)
  return (t * t * jnp.sum(jnp.where(m > 0, tckd, 0.0) * m) / denom,
          t * t * jnp.sum(jnp.where(m > 0, nckd, 0.0) * m) / denom)
