"""Distillation objectives, one small module each; all are pure functions of global batches.

Inside `jax.jit` on batch-sharded global arrays a mean over the batch axis is the global mean, so
every loss here is computed over the global batch however many devices hold it (tested on 1 and
8 devices).

  alignment(z_s, z_t, alpha)           paper A (Farhat & Chen, arXiv 2404.03263), Wang & Isola
  uniformity(z, t)                     paper A
  kd_kl(student_logits, teacher_logits, temperature)            Hinton et al., arXiv 1503.02531
  multi_teacher_kd(student_logits, [teacher_logits...], temperature, mode)
  aft(g, phi, rho_logits, kernel)      paper B (Qiu et al., arXiv 2406.07337), the regulariser R
  aft_feature_map(g, phi, v, b)        paper B's "no kernel" variant (pre-trained -> downstream)
  feature_kd(g, phi, w, b)             paper B's feature-KD baseline (downstream -> pre-trained)
"""

from kdjax.losses.aft import aft, aft_feature_map
from kdjax.losses.align_uniform import alignment, uniformity
from kdjax.losses.feature_kd import feature_kd
from kdjax.losses.kd import kd_kl, multi_teacher_kd

__all__ = ["aft", "aft_feature_map", "alignment", "feature_kd", "kd_kl", "multi_teacher_kd",
           "uniformity"]
