"""SRRL, knowledge distillation via softmax regression representation learning (Yang, Martinez,
Bulat & Tzimiropoulos, ICLR 2021; openreview ZzwDy_wiWv, no arXiv id), as paper A (Farhat & Chen,
arXiv 2404.03263) uses it: sfarhat/dapt distill.py:65-85 (the connector), :201-215 (the losses).

A connector maps the student's penultimate features to the teacher's width; the teacher's own
(frozen) linear head applied to them should give the teacher's logits (the softmax-regression
term, MSE over all elements: distill.py:204-206), and the mapped features should match the
teacher's (feature term: --distill srrl makes criterion_kd nn.MSELoss(), distill.py:114, applied
to the connector's output and the teacher's features, :215). Everything of the teacher (head,
logits, features) is under stop_gradient: the reference freezes it (distill.py:56-57, 191-193).

SRRL_DEFAULTS: --connector 'mlp2' (distill.py:332), i.e. Linear(d_s, (d_s + d_t) // 2), ReLU,
Linear(., d_t), ReLU (distill.py:73-77; built elsewhere), and the weights of --distill srrl,
distill.py:390-394: CE 1 (lambd1), feature MSE 1 (lambd2), KD 0 (lambd3), logit MSE 1 (lambd4).
The original SRRL code (jingyang2017/KD_SRRL) instead uses a 1x1 convolution + BatchNorm + ReLU
connector on the feature map, its feature term the MSE of the spatially averaged maps, and
CE + weight * (feature + logit MSE) with weight 1.
"""

import jax
import jax.numpy as jnp

SRRL_DEFAULTS = {"connector": "mlp2", "ce_weight": 1.0, "feature_weight": 1.0,
                 "logit_weight": 1.0, "kd_weight": 0.0}


def srrl(mapped_student_features: jax.Array, teacher_kernel: jax.Array,
         teacher_bias: jax.Array | None, teacher_logits: jax.Array,
         teacher_features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(logit MSE, feature MSE). mapped_student_features [B, d_t] (the connector's output);
  teacher_kernel [d_t, C], teacher_bias [C] or None: the teacher's head; teacher_logits [B, C];
  teacher_features [B, d_t]."""
  f = mapped_student_features.astype(jnp.float32)
  kernel = jax.lax.stop_gradient(teacher_kernel.astype(jnp.float32))
  logits = f @ kernel
  if teacher_bias is not None:
    logits = logits + jax.lax.stop_gradient(teacher_bias.astype(jnp.float32))
  target_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  target_features = jax.lax.stop_gradient(teacher_features.astype(jnp.float32))
  return (jnp.mean(jnp.square(logits - target_logits)),
          jnp.mean(jnp.square(f - target_features)))
