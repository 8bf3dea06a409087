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
  dkd         decoupled KD (alpha TCKD + beta NCKD) on the teachers' task heads (one teacher)
  crd         paper A's baseline CRD: the projection heads' embeddings against a memory bank of
              every training row's past embeddings (state.memory["crd"], checkpointed)
  srrl, srrl_feature  paper A's baseline SRRL: a connector maps the student's features to the
              teacher's; the teacher's own head on them vs its logits; the features vs its
  rkd         paper B's baseline: relational KD (distance and angle) on the raw features
  ft          paper B's baseline "factor transfer": a 3-layer MLP student -> teacher, L1 of
              the L2-normalised pair
  btuning     paper B's baseline B-Tuning: the student's features through their LogME weights
              regressed onto the teachers' (LogME fitted once before training, btuning.py)
(formulas: kdjax/losses). Only terms with a non-zero weight are computed. loss.kd_standardize
z-scores the logits of kd and dkd (logit standardisation); loss.warmup_epochs.<term> ramps a
term's weight linearly from 0 (applied by the train step, kdjax/steps.py).

Teachers are never differentiated: their variables are an input of the step (not state), they
run in eval mode, and their outputs pass through `stop_gradient`. What trains besides the
student lives in `state.aux`: {"student_proj", "teacher_proj"} (paper A, trained with the
student's optimizer), "srrl_connector" (with the student) and {"rho" or "aft_map", "feature_kd",
"ft"} (at `loss.prior_learning_rate`, see optim.py). What is state but not trained lives in
`state.memory`: CRD's memory bank and its normalisation constants.

Teacher and student see the same augmented image, each teacher in its own input view
(teacher_views.py).
"""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import errors, losses
from kdjax.distill.btuning import placeholders as btuning_placeholders
from kdjax.distill.teacher_views import to_teacher_pixels
from kdjax.losses.aft import KERNELS
from kdjax.losses.kd import MULTI_TEACHER_MODES

TERMS = ("ce", "kd", "align", "unif", "aft", "feature_kd", "dkd", "crd", "srrl",
         "srrl_feature", "rkd", "ft", "btuning")
PROJECTION_HEADS = {"mlp": True, "linear": False}  # loss.proj_head -> with a hidden layer
SRRL_CONNECTORS = ("mlp2", "mlp")  # loss.srrl_connector (paper A's reference, distill.py:69-80)
# terms that read the teachers' task heads (their logits over the task's classes)
HEAD_TERMS = ("kd", "dkd", "srrl")
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
                     ("aft_kernel", AFT_KERNELS), ("aft_rho", AFT_RHO),
                     ("srrl_connector", SRRL_CONNECTORS)]:
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
    return x / jnp.maximum(safe_norm(x), 1e-12)


def safe_norm(x):
  """Row L2 norms [..., 1] whose gradient at a zero row is 0, as torch's, not NaN (a dead-ReLU
  feature row through a zero-bias head is exactly zero)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


class Distiller:
  """The distillation part of the train step for a given loss config and set of teachers.

  `views`: one TeacherView per teacher (the order of teacher.models). `cached`: the step reads
  the teachers' outputs from the batch ("teacher_features", "teacher_logits"; teacher_cache.py)
  instead of running them. `train_labels`: the label of every training row (-1: unlabelled), in
  the order of the batches' "index" (CRD's memory bank and its negatives). `teacher_heads`: per
  teacher, its linear task head (kernel [D, C], bias [C]) or None (SRRL reads it).
  """

  def __init__(self, loss_cfg, views: list, num_classes: int, student_features: int,
               data_mean, data_std, cached: bool = False, train_labels=None,
               teacher_heads=None):
    self.cfg, self.views, self.num_classes = loss_cfg, list(views), num_classes
    self.student_features, self.cached = student_features, cached
    self.data_mean, self.data_std = tuple(data_mean), tuple(data_std)
    self.weights = weights(loss_cfg)
    check(loss_cfg, has_teachers=bool(self.views))
    self.num_teacher_features = sum(v.num_features for v in self.views)
    # teachers with a head over the task's classes: KD targets, cached logits, teacher accuracy
    self.kd_teachers = [i for i, v in enumerate(self.views) if v.num_logits == num_classes]
    self._check_heads(teacher_heads)
    self.uses_projection = any(t in self.weights for t in ("align", "unif", "crd"))
    self.student_proj = ProjectionHead(loss_cfg.proj_head, loss_cfg.proj_dim)
    self.teacher_proj = ProjectionHead(loss_cfg.proj_head, loss_cfg.proj_dim)
    self.teacher_head = None
    if "srrl" in self.weights:
      self.teacher_head = jax.tree.map(lambda x: np.asarray(x, np.float32), teacher_heads[0])
    self.srrl_connector = SrrlConnector(loss_cfg.srrl_connector, self.num_teacher_features)
    self.ft_mlp = FactorTransferMLP(self.num_teacher_features)
    self.crd_table = None
    if "crd" in self.weights:
      if train_labels is None:
        raise errors.UserError("loss.crd_weight > 0 needs the training rows' labels")
      self.train_labels = np.asarray(train_labels)
      self.crd_table = {k: np.asarray(v) for k, v in
                        losses.class_table(self.train_labels).items()}

  def _check_heads(self, teacher_heads) -> None:
    """Terms that read the teachers' task heads: every teacher has one over the task's classes
    (one teacher for dkd and srrl; srrl also needs the head's weights)."""
    num_classes, w = self.num_classes, self.weights
    for term in [t for t in HEAD_TERMS if t in w]:
      wrong = [f"{v.name!r} ({v.num_logits} classes)" for v in self.views
               if v.num_logits != num_classes]
      if wrong:
        raise errors.UserError(
            f"loss.{term}_weight needs teacher heads with the task's {num_classes} classes; "
            f"{', '.join(wrong)} do not match: adapt each teacher to the task first (python -m "
            "kdjax.main --config=configs/adapt.py:model=<hub id>,data=<task> --workdir=DIR) "
            f"and pass DIR in teacher.models, or set loss.{term}_weight=0")
      if term in ("dkd", "srrl") and len(self.views) > 1:
        raise errors.UserError(f"loss.{term}_weight supports one teacher, got {len(self.views)} "
                               f"({[v.name for v in self.views]}): pass one in teacher.models, "
                               "or use kd (several teachers: loss.kd_multi_teacher)")
    if "srrl" in w and (not teacher_heads or teacher_heads[0] is None):
      raise errors.UserError(
          f"loss.srrl_weight reads the teacher's linear task head, and {self.views[0].name!r} "
          "has none kdjax can find (a 'classifier' or 'head' Dense layer): use a teacher with a "
          "linear head, or set loss.srrl_weight=0")

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
    if "srrl" in self.weights or "srrl_feature" in self.weights:
      aux["srrl_connector"] = self.srrl_connector.init(
          jax.random.fold_in(k_f, 2), jnp.zeros((1, d_g)))["params"]
    if "ft" in self.weights:
      aux["ft"] = self.ft_mlp.init(jax.random.fold_in(k_f, 3), jnp.zeros((1, d_g)))["params"]
    return aux

  def init_memory(self, key) -> dict:
    """The distillation state that is not trained (checkpointed with the run): CRD's memory
    bank of every training row's student and teacher embeddings; B-Tuning's LogME constants
    (zeros here, fitted by kdjax.distill.btuning.fit before training)."""
    memory = {}
    if "crd" in self.weights:
      memory["crd"] = losses.init_memory(key, len(self.train_labels), self.cfg.proj_dim)
    if "btuning" in self.weights:
      memory["btuning"] = btuning_placeholders(self.num_classes, self.student_features,
                                               [v.num_features for v in self.views])
    return memory

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

  def terms(self, aux, memory, batch, student_features, student_logits, tout,
            key) -> tuple[dict, dict, dict]:
    """(unweighted loss terms, extra metrics, new memory) of the non-CE terms with non-zero
    weight. `batch`: its "label" and "index" ([B]); `key`: this step's randomness (CRD's
    negatives)."""
    cfg, w = self.cfg, self.weights
    g, phi = student_features.astype(jnp.float32), tout["features"]
    terms, metrics, memory = {}, {}, dict(memory)
    if "kd" in w:
      teacher_logits = [tout["logits"][:, i] for i in range(tout["logits"].shape[1])]
      terms["kd"] = (losses.kd_kl(student_logits, teacher_logits[0], cfg.kd_temperature,
                                  standardize=cfg.kd_standardize)
                     if len(teacher_logits) == 1 else
                     losses.multi_teacher_kd(student_logits, teacher_logits, cfg.kd_temperature,
                                             cfg.kd_multi_teacher, standardize=cfg.kd_standardize))
    if "dkd" in w:
      labels = batch["label"]
      tckd, nckd = losses.dkd(student_logits, tout["logits"][:, 0], jnp.maximum(labels, 0),
                              cfg.dkd_temperature, standardize=cfg.kd_standardize,
                              mask=(labels >= 0).astype(jnp.float32))
      metrics["dkd_tckd"], metrics["dkd_nckd"] = tckd, nckd
      terms["dkd"] = cfg.dkd_alpha * tckd + cfg.dkd_beta * nckd
    if self.uses_projection:
      z_s = self.student_proj.apply({"params": aux["student_proj"]}, g)
      z_t = self.teacher_proj.apply({"params": aux["teacher_proj"]}, phi)
      if "align" in w:
        terms["align"] = losses.alignment(z_s, z_t, cfg.align_alpha)
      if "unif" in w:
        metrics["unif_student"] = losses.uniformity(z_s, cfg.unif_t)
        metrics["unif_teacher"] = losses.uniformity(z_t, cfg.unif_t)
        terms["unif"] = 0.5 * (metrics["unif_student"] + metrics["unif_teacher"])
      if "crd" in w:
        table = {k: jnp.asarray(v) for k, v in self.crd_table.items()}
        negatives = losses.sample_negatives(key, table["group"][batch["index"]], table,
                                                cfg.crd_negatives)
        terms["crd"], memory["crd"] = losses.crd(
            z_s, z_t, memory["crd"], batch["index"], negatives, cfg.crd_temperature,
            cfg.crd_momentum)
    if "aft" in w and cfg.aft_kernel == "none":
      terms["aft"] = losses.aft_feature_map(g, phi, aux["aft_map"]["kernel"],
                                            aux["aft_map"]["bias"])
    elif "aft" in w:
      terms["aft"] = losses.aft(g, phi, aux["rho"], cfg.aft_kernel)
      metrics["rho_mean"] = jnp.mean(rho_weights(aux["rho"]))
    if "feature_kd" in w:
      fk = aux["feature_kd"]
      terms["feature_kd"] = losses.feature_kd(g, phi, fk["kernel"], fk["bias"])
    if "srrl" in w or "srrl_feature" in w:
      mapped = self.srrl_connector.apply({"params": aux["srrl_connector"]}, g)
      head = self.teacher_head or {"kernel": jnp.zeros((phi.shape[-1], self.num_classes)),
                                   "bias": jnp.zeros((self.num_classes,))}
      logit_mse, feature_mse = losses.srrl(
          mapped, jnp.asarray(head["kernel"]), jnp.asarray(head["bias"]),
          tout["logits"][:, 0] if "logits" in tout else jnp.zeros((g.shape[0], self.num_classes)),
          phi)
      if "srrl" in w:
        terms["srrl"] = logit_mse
      if "srrl_feature" in w:
        terms["srrl_feature"] = feature_mse
    if "rkd" in w:
      metrics["rkd_distance"] = losses.rkd_distance(g, phi)
      metrics["rkd_angle"] = losses.rkd_angle(g, phi)
      terms["rkd"] = (cfg.rkd_distance_weight * metrics["rkd_distance"]
                      + cfg.rkd_angle_weight * metrics["rkd_angle"])
    if "ft" in w:
      terms["ft"] = losses.ft_loss(self.ft_mlp.apply({"params": aux["ft"]}, g), phi)
    if "btuning" in w:
      bt = memory["btuning"]
      splits = np.cumsum([v.num_features for v in self.views])[:-1].tolist()
      terms["btuning"] = losses.btuning(g, jnp.split(phi, splits, axis=-1), bt["mu_student"],
                                        bt["mu_teachers"], bt["weights"])
    return terms, metrics, memory

  def teacher_probabilities(self, teacher_vars, images):
    """The teachers' task probabilities [B, C] (the mean over the teachers with a task head)."""
    out = self.teacher_outputs(teacher_vars, images)
    return jnp.mean(jax.nn.softmax(out["logits"], axis=-1), axis=1)


class SrrlConnector(nn.Module):
  """SRRL's connector from the student's to the teacher's features (paper A's reference,
  sfarhat/dapt distill.py:69-80): "mlp2" = Linear(s, (s+t)//2)-ReLU-Linear(t)-ReLU, "mlp" =
  Linear(s, t)-ReLU; torch nn.Linear's initialisation."""

  kind: str
  out_dim: int

  @nn.compact
  def __call__(self, x):
    if self.kind == "mlp2":
      x = nn.relu(TorchDense((x.shape[-1] + self.out_dim) // 2, name="hidden")(x))
    return nn.relu(TorchDense(self.out_dim, name="out")(x))


class FactorTransferMLP(nn.Module):
  """Paper B's "factor transfer" map (its reference FTPrior, prior.py:324-345): Linear(s, s)-
  ReLU-Linear(s, t)-ReLU-Linear(t, t), the last layer's weight zero-initialised (its bias keeps
  torch's default), from the student's to the teacher's features."""

  out_dim: int

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = nn.relu(TorchDense(d, name="fc1")(x))
    x = nn.relu(TorchDense(self.out_dim, name="fc2")(x))
    return TorchDense(self.out_dim, zero_kernel=True, name="fc3")(x)


class TorchDense(nn.Module):
  """nn.Dense with torch nn.Linear's default initialisation (kernel and bias uniform in
  +-1/sqrt(fan_in)); `zero_kernel`: the kernel starts at 0."""

  features: int
  zero_kernel: bool = False

  @nn.compact
  def __call__(self, x):
    uniform = _torch_uniform(x.shape[-1])
    kernel_init = nn.initializers.zeros if self.zero_kernel else uniform
    return nn.Dense(self.features, kernel_init=kernel_init, bias_init=uniform)(
        x.astype(jnp.float32))


def linear_head(variables, num_classes: int):
  """A teacher's linear task head {"kernel" [D, C], "bias" [C]} from its variables: the
  top-level "classifier" (Hugging Face ports, adapted teachers) or "head" (kdjax students)
  Dense over `num_classes`; None if it has none."""
  params = variables.get("params", {})
  for name in ("classifier", "head"):
    layer = params.get(name)
    if isinstance(layer, dict) and "kernel" in layer and "bias" in layer:
      if layer["kernel"].ndim == 2 and layer["kernel"].shape[-1] == num_classes:
        return {"kernel": layer["kernel"], "bias": layer["bias"]}
  return None


def _torch_linear(key, d_in: int, d_out: int) -> dict:
  """A torch nn.Linear(d_in, d_out)'s default initialisation: kernel [d_in, d_out] and bias,
  both uniform in +-1/sqrt(d_in)."""
  kw, kb = jax.random.split(key)
  uniform = _torch_uniform(d_in)
  return {"kernel": uniform(kw, (d_in, d_out)), "bias": uniform(kb, (d_out,))}


def _torch_uniform(fan_in: int):
  """torch nn.Linear's default initialiser: uniform in +-1/sqrt(fan_in)."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def rho_weights(rho):
  """Per-feature weight: sigmoid(rho) (diagonal), or the row norms of the dense map."""
  if rho.ndim == 1:
    return jax.nn.sigmoid(rho)
  return jnp.linalg.norm(rho, axis=-1)
