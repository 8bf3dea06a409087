"""Distillation objectives, one small module each; all are pure functions of global batches.

Inside `jax.jit` on batch-sharded global arrays a mean over the batch axis is the global mean, so
every loss here is computed over the global batch however many devices hold it (tested on 1 and
8 devices).

  alignment(z_s, z_t, alpha)           paper A (Farhat & Chen, arXiv 2404.03263), Wang & Isola
  uniformity(z, t)                     paper A
  kd_kl(student_logits, teacher_logits, temperature, standardize)  Hinton et al., arXiv 1503.02531
  multi_teacher_kd(student_logits, [teacher_logits...], temperature, mode, standardize)
  standardize(logits)                  logit standardisation, Sun et al., arXiv 2403.01427
  dkd(student_logits, teacher_logits, labels, temperature, standardize, mask) -> (tckd, nckd)
                                       Decoupled KD, Zhao et al., arXiv 2203.08679
  rkd_distance(student, teacher)       Relational KD, Park et al., arXiv 1904.05068 (paper B's)
  rkd_angle(student, teacher)          Relational KD, Park et al., arXiv 1904.05068 (paper B's)
  crd(z_s, z_t, memory, index, negatives, temperature, momentum) -> (loss, new_memory)
                                       Contrastive Representation Distillation, Tian et al.,
                                       arXiv 1910.10699 (paper A's); with init_memory,
                                       class_table, sample_negatives
  srrl(mapped, kernel, bias, teacher_logits, teacher_features) -> (logit_mse, feature_mse)
                                       SRRL, Yang et al., ICLR 2021 (openreview ZzwDy_wiWv;
                                       paper A's)
  ft_loss(pred, teacher_features)      factor transfer, Kim et al., arXiv 1802.04977 (paper B's)
  logme(features, labels, num_classes) -> (score, mu)
                                       LogME, You et al., arXiv 2102.11005 / 2110.10545 (host)
  btuning(g, phis, mu_student, mus, weights), btuning_weights(scores, temperature)
                                       B-Tuning, You et al., arXiv 2110.10545 (paper B's)
  aft(g, phi, rho_logits, kernel)      paper B (Qiu et al., arXiv 2406.07337), the regulariser R
  aft_feature_map(g, phi, v, b)        paper B's "no kernel" variant (pre-trained -> downstream)
  feature_kd(g, phi, w, b)             paper B's feature-KD baseline (downstream -> pre-trained)
"""

from kdjax.losses.aft import aft, aft_feature_map
from kdjax.losses.align_uniform import alignment, uniformity
from kdjax.losses.btuning import btuning, btuning_weights, logme, logme_fit
from kdjax.losses.crd import class_table, crd, init_memory, sample_negatives
from kdjax.losses.dkd import dkd
from kdjax.losses.factor_transfer import ft_loss
from kdjax.losses.feature_kd import feature_kd
from kdjax.losses.kd import kd_kl, multi_teacher_kd, standardize
from kdjax.losses.rkd import rkd_angle, rkd_distance
from kdjax.losses.srrl import srrl

__all__ = ["aft", "aft_feature_map", "alignment", "btuning", "btuning_weights", "class_table",
           "crd", "dkd", "feature_kd", "ft_loss", "init_memory", "kd_kl", "logme", "logme_fit",
           "multi_teacher_kd", "rkd_angle", "rkd_distance", "sample_negatives", "srrl",
           "standardize", "uniformity"]
