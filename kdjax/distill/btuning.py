"""B-Tuning's constants, fitted once before training (paper B's baseline; You et al., arXiv
2110.10545, as paper B's reference computes them: amazon-science/adaptive-feature-transfer,
prior.py:248-270 and 381-392).

LogME is fitted on the features of every labelled training row in the eval view (no
augmentation; the reference reads features saved once per dataset): each teacher's features
give its LogME score and posterior mean weights mu_i [C, d_i], the student's features *at
initialisation* (the reference's "downstream model" features) give mu_student [C, d_g]. The
teachers are weighted by softmax(scores / loss.btuning_temperature). The constants live in
`state.memory["btuning"]` (checkpointed with the run, so a resumed run keeps the values it
started with); the term is kdjax.losses.btuning.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kdjax import losses
from kdjax import sharding as shd
from kdjax.data import pipeline


def placeholders(num_classes: int, student_features: int, teacher_features: list) -> dict:
  """Zeros of the constants' shapes (the state's structure before `fit` fills it)."""
  return {"mu_student": jnp.zeros((num_classes, student_features), jnp.float32),
          "mu_teachers": [jnp.zeros((num_classes, d), jnp.float32) for d in teacher_features],
          "weights": jnp.zeros((len(teacher_features),), jnp.float32)}


def fit(distiller, state, variables, predict_features, data, data_cfg, teacher_vars, mesh,
        batch_size: int):
  """`state` with memory["btuning"] fitted: LogME of the teachers' and the initial student's
  features over the labelled training rows. `predict_features(variables, images)` -> the
  student's pre-logits features, `variables`: the student's (of `state`, with any frozen part);
  `teacher_vars`: every teacher's variables (also when the run reads cached outputs: this pass
  runs them once, on the eval view)."""
  rows = pipeline.EvalInput(data.train.source, data.train.rows, data_cfg, mesh, batch_size)
  repl = shd.replicated(mesh)  # gathered on every process: each fits the same constants

  def features(variables, tvars, batch):
    return (predict_features(variables, batch["image"]),
            distiller.teacher_outputs(tvars, batch["image"])["features"], batch["label"],
            batch["mask"])

  gather = jax.jit(features, out_shardings=repl)
  g, phi, labels = [], [], []
  for batch in rows.batches():
    g_b, phi_b, label_b, mask_b = (shd.host_copy(x) for x in
                                   gather(variables, teacher_vars, batch))
    keep = mask_b > 0
    g.append(g_b[keep])
    phi.append(phi_b[keep])
    labels.append(label_b[keep])
  g, phi, labels = np.concatenate(g), np.concatenate(phi), np.concatenate(labels)
  labelled = labels >= 0
  g, phi, labels = g[labelled], phi[labelled], labels[labelled]
  c = distiller.num_classes
  _, mu_student = losses.logme(g, labels, c)
  scores, mus, start = [], [], 0
  for view in distiller.views:
    score, mu = losses.logme(phi[:, start:start + view.num_features], labels, c)
    start += view.num_features
    scores.append(score)
    mus.append(mu)
  weights = losses.btuning_weights(scores, distiller.cfg.btuning_temperature)
  logging.info("B-Tuning: LogME on %d labelled training rows; teachers' scores %s -> weights %s",
               len(labels), [round(s, 4) for s in scores],
               [round(float(w), 4) for w in np.asarray(weights)])
  fitted = {"mu_student": np.asarray(mu_student, np.float32),
            "mu_teachers": [np.asarray(m, np.float32) for m in mus],
            "weights": np.asarray(weights, np.float32)}
  fitted = jax.tree.map(lambda x: shd.global_from_host(x, repl), fitted)
  return state.replace(memory={**state.memory, "btuning": fitted})
