"""Distillation inside the one trainer: frozen teachers as step inputs, the objective's terms,
and the small trainable parameters the terms need (projection heads, AFT's rho, maps).

The student's loss is `sum_k loss.<k>_weight * term_k` over
  ce          cross-entropy on the labels
  kd          Hinton KD on the teachers' task heads (several teachers: loss.kd_multi_teacher)
  align/unif  paper A (Farhat & Chen, arXiv 2404.03263): the student's and the teacher's
              penultimate features each through its own projection head, L2-normalised;
              alignment of the pair, uniformity of each (student and teacher averaged)
  aft         paper B (Qiu et al., arXiv 2406.07337): R between the student's features and the
              rho-weighted teacher features (several teachers: concatenated); or, with
              loss.aft_kernel=none, the MSE to a learned map of the teacher features
  feature_kd  paper B's baseline: a linear map from student to teacher features, MSE
(formulas: kdjax/losses). Only terms with a non-zero weight are computed.

Teachers are never differentiated: their variables are an input of the step (not state), they
run in eval mode, and their outputs pass through `stop_gradient`. What trains besides the
student lives in `state.aux`: {"student_proj", "teacher_proj"} (paper A, trained with the
student's optimizer) and {"rho" or "aft_map", "feature_kd"} (at `loss.prior_learning_rate`,
see optim.py).

Teacher and student see the same augmented image, each teacher in its own input view
(teacher_views.py).
"""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import errors, losses
from kdjax.distill.teacher_views import to_teacher_pixels
from kdjax.losses.aft import KERNELS
from kdjax.losses.kd import MULTI_TEACHER_MODES

TERMS = ("ce", "kd", "align", "unif", "aft", "feature_kd")
PROJECTION_HEADS = {"mlp": True, "linear": False}  # loss.proj_head -> with a hidden layer
AFT_RHO = ("diagonal", "dense")
# loss.aft_kernel: a kernel of R, or "none": paper B's "no kernel" variant (the reference's
# aft_no_kernel, prior.py:226-246): a learned linear map V from pre-trained to downstream
# features (with bias, trained at loss.prior_learning_rate), MSE of the batch-centred pair
AFT_KERNELS = (*KERNELS, "none")
TEACHER_MODES = ("online", "cached")


def weights(loss_cfg) -> dict:
  """term -> weight, for the terms with a non-zero weight (CE always listed, for logging)."""
  out = {"ce": float(loss_cfg.ce_weight)}
  for term in TERMS[1:]:
    w = float(loss_cfg[f"{term}_weight"])
    if w < 0:
      raise errors.UserError(f"loss.{term}_weight={w}: a loss weight must be >= 0 (0 turns the "
                             "term off)")
    if w:
      out[term] = w
  return out


def needs_teacher(loss_cfg) -> bool:
  return len(weights(loss_cfg)) > 1


def check(loss_cfg, has_teachers: bool) -> None:
  """Refuses a `config.loss` the step could not compute: an unknown setting, a negative weight,
  or distillation terms without teachers (`has_teachers`: teacher.models is set)."""
  terms = sorted(set(weights(loss_cfg)) - {"ce"})
  for key, table in [("kd_multi_teacher", MULTI_TEACHER_MODES), ("proj_head", PROJECTION_HEADS),
                     ("aft_kernel", AFT_KERNELS), ("aft_rho", AFT_RHO)]:
    if loss_cfg[key] not in table:
      raise errors.UserError(f"unknown loss.{key} {loss_cfg[key]!r}; valid: {sorted(table)}")
  if terms and not has_teachers:
    raise errors.UserError(f"loss terms {terms} need teachers: set teacher.models (Hub ids, "
                           "directories or kdjax run directories), or their loss.*_weight to 0")


class ProjectionHead(nn.Module):
  """Paper A's embedding head: mlp = Linear(d,d)-ReLU-Linear(d,dim) ("mocov2"), or linear;
  then L2-normalised (torch F.normalize: x / max(||x||, 1e-12))."""

  kind: str = "mlp"
  dim: int = 128

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    if PROJECTION_HEADS[self.kind]:  # "mlp": a hidden layer first
      x = nn.relu(nn.Dense(x.shape[-1], name="hidden")(x))
    x = nn.Dense(self.dim, name="out")(x)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Distiller:
  """The distillation part of the train step for a given loss config and set of teachers.

  `views`: one TeacherView per teacher (the order of teacher.models). `cached`: the step reads
  the teachers' outputs from the batch ("teacher_features", "teacher_logits"; teacher_cache.py)
  instead of running them.
  """

  def __init__(self, loss_cfg, views: list, num_classes: int, student_features: int,
               data_mean, data_std, cached: bool = False):
    self.cfg, self.views, self.num_classes = loss_cfg, list(views), num_classes
    self.student_features, self.cached = student_features, cached
    self.data_mean, self.data_std = tuple(data_mean), tuple(data_std)
    self.weights = weights(loss_cfg)
    check(loss_cfg, has_teachers=bool(self.views))
    self.num_teacher_features = sum(v.num_features for v in self.views)
    # teachers with a head over the task's classes: KD targets, cached logits, teacher accuracy
    self.kd_teachers = [i for i, v in enumerate(self.views) if v.num_logits == num_classes]
    if "kd" in self.weights:
      wrong = [f"{v.name!r} ({v.num_logits} classes)" for v in self.views
               if v.num_logits != num_classes]
      if wrong:
        raise errors.UserError(
            f"KD needs teacher heads with the task's {num_classes} classes; {', '.join(wrong)} "
            "do not match: adapt each teacher to the task first (python -m kdjax.main "
            "--config=configs/adapt.py:model=<hub id>,data=<task> --workdir=DIR) and pass DIR "
            "in teacher.models, or set loss.kd_weight=0")
    self.uses_projection = "align" in self.weights or "unif" in self.weights
    self.student_proj = ProjectionHead(loss_cfg.proj_head, loss_cfg.proj_dim)
    self.teacher_proj = ProjectionHead(loss_cfg.proj_head, loss_cfg.proj_dim)

  def init_aux(self, key) -> dict:
    """The trainable distillation parameters (all {} for a CE-only run)."""
    aux = {}
    k_s, k_t, k_f = jax.random.split(key, 3)
    d_g, d_phi = self.student_features, self.num_teacher_features
    if self.uses_projection:
      aux["student_proj"] = self.student_proj.init(k_s, jnp.zeros((1, d_g)))["params"]
      aux["teacher_proj"] = self.teacher_proj.init(k_t, jnp.zeros((1, d_phi)))["params"]
    k_v = jax.random.fold_in(k_f, 1)
    if "aft" in self.weights and self.cfg.aft_kernel == "none":
      aux["aft_map"] = _torch_linear(k_v, d_phi, d_g)  # nn.Linear(d_phi, d_g), prior.py:233
    elif "aft" in self.weights:  # rho = sigmoid(0) = 0.5 (reference); dense: 0.5 * identity
      aux["rho"] = (jnp.zeros((d_phi,)) if self.cfg.aft_rho == "diagonal"
                    else 0.5 * jnp.eye(d_phi))
    if "feature_kd" in self.weights:
      aux["feature_kd"] = _torch_linear(k_f, d_g, d_phi)
    return aux

  def teacher_outputs(self, teacher_vars, images) -> dict:
    """Online: every teacher on the batch. {"features": [B, sum D], "logits": [B, T, C]}."""
    feats, logits = [], []
    for view, variables in zip(self.views, teacher_vars):
      out = view.apply(variables, to_teacher_pixels(images, self.data_mean, self.data_std, view))
      feats.append(out["features"].astype(jnp.float32))
      if view.num_logits == self.num_classes:
        logits.append(out["logits"].astype(jnp.float32))
    out = {"features": jnp.concatenate(feats, axis=-1)}
    if logits:
      out["logits"] = jnp.stack(logits, axis=1)
    return jax.tree.map(jax.lax.stop_gradient, out)

  def outputs_for(self, teacher_vars, batch) -> dict:
    if self.cached:  # data, like the images: nothing to stop a gradient from
      out = {"features": batch["teacher_features"]}
      if "teacher_logits" in batch:
        out["logits"] = batch["teacher_logits"]
      return out
    return self.teacher_outputs(teacher_vars, batch["image"])

  def terms(self, aux, student_features, student_logits, tout) -> tuple[dict, dict]:
    """(unweighted loss terms, extra metrics) of the non-CE terms with non-zero weight."""
    cfg, w = self.cfg, self.weights
    g, phi = student_features.astype(jnp.float32), tout["features"]
    terms, metrics = {}, {}
    if "kd" in w:
      teacher_logits = [tout["logits"][:, i] for i in range(tout["logits"].shape[1])]
      terms["kd"] = (losses.kd_kl(student_logits, teacher_logits[0], cfg.kd_temperature)
                     if len(teacher_logits) == 1 else
                     losses.multi_teacher_kd(student_logits, teacher_logits, cfg.kd_temperature,
                                             cfg.kd_multi_teacher))
    if self.uses_projection:
      z_s = self.student_proj.apply({"params": aux["student_proj"]}, g)
      z_t = self.teacher_proj.apply({"params": aux["teacher_proj"]}, phi)
      if "align" in w:
        terms["align"] = losses.alignment(z_s, z_t, cfg.align_alpha)
      if "unif" in w:
        metrics["unif_student"] = losses.uniformity(z_s, cfg.unif_t)
        metrics["unif_teacher"] = losses.uniformity(z_t, cfg.unif_t)
        terms["unif"] = 0.5 * (metrics["unif_student"] + metrics["unif_teacher"])
    if "aft" in w and cfg.aft_kernel == "none":
      terms["aft"] = losses.aft_feature_map(g, phi, aux["aft_map"]["kernel"],
                                            aux["aft_map"]["bias"])
    elif "aft" in w:
      terms["aft"] = losses.aft(g, phi, aux["rho"], cfg.aft_kernel)
      metrics["rho_mean"] = jnp.mean(rho_weights(aux["rho"]))
    if "feature_kd" in w:
      fk = aux["feature_kd"]
      terms["feature_kd"] = losses.feature_kd(g, phi, fk["kernel"], fk["bias"])
    return terms, metrics

  def teacher_predictions(self, teacher_vars, images):
    """The teachers' task prediction [B] (argmax of the mean probability over KD teachers)."""
    out = self.teacher_outputs(teacher_vars, images)
    return jnp.argmax(jnp.mean(jax.nn.softmax(out["logits"], axis=-1), axis=1), axis=-1)


def _torch_linear(key, d_in: int, d_out: int) -> dict:
  """A torch nn.Linear(d_in, d_out)'s default initialisation: kernel [d_in, d_out] and bias,
  both uniform in +-1/sqrt(d_in)."""
  bound = 1.0 / np.sqrt(d_in)
  kw, kb = jax.random.split(key)
  return {"kernel": jax.random.uniform(kw, (d_in, d_out), minval=-bound, maxval=bound),
          "bias": jax.random.uniform(kb, (d_out,), minval=-bound, maxval=bound)}


def rho_weights(rho):
  """Per-feature weight: sigmoid(rho) (diagonal), or the row norms of the dense map."""
  if rho.ndim == 1:
    return jax.nn.sigmoid(rho)
  return jnp.linalg.norm(rho, axis=-1)
