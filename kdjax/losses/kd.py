"""Hinton knowledge distillation (Hinton, Vinyals & Dean, arXiv 1503.02531), the KD term of
paper A (Farhat & Chen, arXiv 2404.03263), with one or several teachers."""

import jax
import jax.numpy as jnp

MULTI_TEACHER_MODES = ("mean_probs", "sum_kl")


def _kl(teacher_probs, teacher_log_probs, student_log_probs):
  """KL(teacher || student) summed over classes, averaged over the batch."""
  return jnp.mean(jnp.sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1))


def kd_kl(student_logits: jax.Array, teacher_logits: jax.Array,
          temperature: float = 4.0) -> jax.Array:
  """T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, batch mean."""
  t = temperature
  s_log = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  t_log = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
  return t * t * _kl(jnp.exp(t_log), t_log, s_log)


def multi_teacher_kd(student_logits: jax.Array, teacher_logits, temperature: float = 4.0,
                     mode: str = "mean_probs") -> jax.Array:
  """KD from several teachers' logits (a list of [B, C]).

  mean_probs: KD towards the average of the teachers' softened distributions.
  sum_kl: the sum of the per-teacher KD terms (big_vision's several-teacher form).
  """
  if mode == "sum_kl":
    return sum(kd_kl(student_logits, tl, temperature) for tl in teacher_logits)
  if mode != "mean_probs":
    raise ValueError(f"unknown multi-teacher KD mode {mode!r}; valid: {list(MULTI_TEACHER_MODES)}")
  t = temperature
  probs = jnp.mean(jnp.stack([jax.nn.softmax(tl.astype(jnp.float32) / t, axis=-1)
                              for tl in teacher_logits]), axis=0)
  s_log = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  # xlogy: 0 * log 0 = 0 where an averaged probability underflows.
  return t * t * jnp.mean(jnp.sum(jax.scipy.special.xlogy(probs, probs) - probs * s_log, -1))
