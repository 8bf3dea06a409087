"""Hinton knowledge distillation (Hinton, Vinyals & Dean, arXiv 1503.02531), the KD term of
paper A (Farhat & Chen, arXiv 2404.03263), with one or several teachers, and the optional logit
standardisation of Sun et al. ("Logit Standardization in Knowledge Distillation", CVPR 2024,
arXiv 2403.01427).

Logit standardisation (`standardize`) is their reference `normalize`
(sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py:7-10, the same function in
DKD.py:7-10): per example, (z - mean(z)) / (1e-7 + std(z)) over the classes, with torch's default
std, i.e. the UNBIASED estimator (divides by C - 1), and the epsilon added to the std (not under
the square root). It is applied to the student's and the teacher's logits before the temperature
(KD.py:13-16). The unbiased std and the biased (1/C) one differ only by the constant factor
sqrt(C / (C - 1)), i.e. a rescaling of the temperature; the reference's choice is matched here.

LS_DEFAULTS: the reference's CIFAR-100 setting for KD + logit standardisation, from its
tools/train.py (README.md:57: `--logit-stand --base-temp 2 --kd-weight 9`): temperature 2
(tools/train.py:103, set at :114), KD weight 9 (:104, set at :113) and CE weight 0.1 (not changed
by the flag: mdistiller/engine/cfg.py:64 of their fork, also upstream mdistiller's cfg.py:63; note
their fork's cfg.py:61-65 already defaults to T 2 and KD weight 9, where upstream has 4 and 0.9).
Their per-pair CIFAR-100 logs (logs/KD/kd,<teacher>,<student>,<T>,<weight>.txt) also use T 3 or 4
and weights 1 to 12 for some pairs.
For DKD the same flag multiplies DKD's alpha and beta by the KD weight (9) and sets T = 2
(tools/train.py:115-118); see kdjax.losses.dkd.
"""

import jax
import jax.numpy as jnp

MULTI_TEACHER_MODES = ("mean_probs", "sum_kl")
LS_EPS = 1e-7  # added to the standard deviation, as the reference's normalize()
LS_DEFAULTS = {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0}


def standardize(logits: jax.Array) -> jax.Array:
  """Per-example z-score over the classes (last axis): (z - mean) / (1e-7 + std), with the
  unbiased std (divide by C - 1) as the reference's torch `logit.std(dim=-1)`. Float32.

  Constant logits (std 0) map to zeros with a finite gradient (safe square root)."""
  x = logits.astype(jnp.float32)
  c = x.shape[-1]
  centred = x - jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.sum(jnp.square(centred), axis=-1, keepdims=True) / max(c - 1, 1)
  std = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
  return centred / (LS_EPS + std)


_standardize = standardize  # the functions below take a keyword of the same name


def _kl(teacher_probs, teacher_log_probs, student_log_probs):
  """KL(teacher || student) summed over classes, averaged over the batch."""
  return jnp.mean(jnp.sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1))


def kd_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0,
          standardize: bool = False) -> jax.Array:
  """T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, batch mean.

  standardize: z-score both logits per example first (logit standardisation, Sun et al.)."""
  t = temperature
  s = student_logits.astype(jnp.float32)
  tl = teacher_logits.astype(jnp.float32)
  if standardize:
    s, tl = _standardize(s), _standardize(tl)
  s_log = jax.nn.log_softmax(s / t, axis=-1)
  t_log = jax.nn.log_softmax(tl / t, axis=-1)
  return t * t * _kl(jnp.exp(t_log), t_log, s_log)


def multi_teacher_kd(student_logits: jax.Array, teacher_logits, temperature: float = 4.0,
                     mode: str = "mean_probs", standardize: bool = False) -> jax.Array:
  """KD from several teachers' logits (a list of [B, C]).

  mean_probs: KD towards the average of the teachers' softened distributions.
  sum_kl: the sum of the per-teacher KD terms (big_vision's several-teacher form).
  standardize: z-score the student's and every teacher's logits per example first.
  """
  if mode == "sum_kl":
    return sum(kd_kl(student_logits, tl, temperature, standardize) for tl in teacher_logits)
  if mode != "mean_probs":
    raise ValueError(f"unknown multi-teacher KD mode {mode!r}; valid: {list(MULTI_TEACHER_MODES)}")
  t = temperature
  prep = _standardize if standardize else (lambda x: x.astype(jnp.float32))
  probs = jnp.mean(jnp.stack([jax.nn.softmax(prep(tl) / t, axis=-1) for tl in teacher_logits]),
                   axis=0)
  s_log = jax.nn.log_softmax(prep(student_logits) / t, axis=-1)
  # xlogy: 0 * log 0 = 0 where an averaged probability underflows.
  return t * t * jnp.mean(jnp.sum(jax.scipy.special.xlogy(probs, probs) - probs * s_log, -1))
