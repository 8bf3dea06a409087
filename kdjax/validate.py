"""The trainer config's validation, in one place: every name and value of configlib.base()'s keys
checked before anything is read, compiled or written, each refusal an errors.UserError that names
the key, the value and what is valid."""

import numbers

import ml_collections

from kdjax import configlib, errors, models, optim
from kdjax import sharding as shd
from kdjax.data import augment, sources
from kdjax.distill import objective, teacher_views


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses a trainer config (base()'s keys) with an unknown name or an impossible value:
  errors.UserError naming the key, the value and what is valid. Reads nothing but the config."""
  c = config
  models.check(c.model)
  adapt = bool(c.teacher.adapt)  # one teacher, adapted into WORKDIR/teacher (kdjax.train.adapt)
  teacher_views.parse_views(c.teacher.views, len(configlib.teacher_names(c)) or int(adapt))
  objective.check(c.loss, has_teachers=bool(c.teacher.models.strip(", ")) or adapt)
  for key, table in [("optimizer.name", optim.OPTIMIZERS),
                     ("optimizer.schedule", optim.SCHEDULES),
                     ("teacher.mode", objective.TEACHER_MODES),
                     ("teacher.dtype", models.DTYPES),
                     ("teacher.param_sharding", shd.PARAM_SHARDINGS),
                     ("data.normalization", configlib.NORMALIZATIONS),
                     ("data.load_resize", sources.LOAD_RESIZES),
                     ("data.load_filter", sources.LOAD_FILTERS),
                     ("data.augment.kind", augment.KINDS)]:
    if configlib.get(c, key) not in table:
      raise errors.UserError(f"unknown {key} {configlib.get(c, key)!r}; valid: {sorted(table)}")
  _check_numbers(c)
  _check_combinations(c)
  if adapt:
    _check_adapt(c)


def _check_numbers(c) -> None:
  """Every number in its range, every tuple of numbers of its length."""

  def check(key, ok, what, none_ok=False):
    value = configlib.get(c, key)
    if value is None and none_ok:
      return
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not ok(value):
      raise errors.UserError(f"{key}={value!r}: must be {what}")

  positive, non_negative = lambda v: v > 0, lambda v: v >= 0
  for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
              "max_to_keep", "model.width", "model.width_multiplier", "loss.kd_temperature",
              "loss.align_alpha", "loss.unif_t", "loss.proj_dim", "teacher.cache_views",
              "loss.dkd_temperature", "loss.crd_negatives", "loss.crd_temperature",
              "loss.btuning_temperature",
              "teacher.cache_shard_size", "data.image_size"):
    check(key, positive, "> 0")
  for key in ("total_steps", "total_epochs", "eval_every_steps", "eval_every_epochs",
              "data.n_per_class"):
    check(key, positive, "> 0 (or None: unset)", none_ok=True)
  for key in ("optimizer.warmup_steps", "optimizer.warmup_epochs", "data.load_size",
              "data.synthetic_per_class"):
    check(key, non_negative, ">= 0 (or None: unset)", none_ok=True)
  for key in ("optimizer.learning_rate", "optimizer.weight_decay", "optimizer.backbone_lr_scale",
              "loss.ce_weight", "loss.prior_learning_rate", "data.augment.pad",
              "loss.dkd_alpha", "loss.dkd_beta", "loss.rkd_distance_weight",
              "loss.rkd_angle_weight",
              *[f"loss.warmup_epochs.{t}" for t in c.loss.warmup_epochs]):
    check(key, non_negative, ">= 0")
  check("data.augment.mixup_alpha", non_negative, ">= 0 (0: no mixup)")
  check("optimizer.decay_factor", positive, "> 0")
  decay = tuple(c.optimizer.decay_epochs)
  if not all(isinstance(e, numbers.Real) and e >= 0 for e in decay) or list(decay) != sorted(
      decay):
    raise errors.UserError(f"optimizer.decay_epochs={decay}: must be increasing epochs >= 0, "
                           "e.g. (150, 180, 210)")
  check("data.augment.mixup_prob", lambda v: 0 <= v <= 1, "in [0, 1]")
  for key in ("loss.label_smoothing", "model.dropout_rate", "optimizer.momentum",
              "loss.crd_momentum",
              "optimizer.b1", "optimizer.b2", "data.val_fraction"):
    check(key, lambda v: 0 <= v < 1, "in [0, 1)")
  for key in ("data.fraction", "data.synthetic_fraction"):
    check(key, lambda v: 0 < v <= 1, "in (0, 1] (or None: unset)", none_ok=True)
  check("data.eval_crop_fraction", lambda v: 0 < v <= 1, "in (0, 1]")
  check("data.max_aspect", lambda v: v >= 1, ">= 1")
  numbers_of(c, "data.mean", 3)
  if min(numbers_of(c, "data.std", 3)) <= 0:
    raise errors.UserError(f"data.std={tuple(c.data.std)}: every value must be > 0")


def numbers_of(c, key, n):
  """The value at `key`: `n` numbers, else a UserError with an example override."""
  value = configlib.get(c, key)
  if not (isinstance(value, tuple | list) and len(value) == n and all(
      isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
    example = ",".join(["0.5"] * n)
    raise errors.UserError(f"{key}={value!r}: must be {n} numbers, e.g. "
                           f"--config.{key}=\"({example})\"")
  return value


def _check_combinations(c) -> None:
  """Keys that exclude or need each other."""
  if c.data.load_resize == "shorter_full" and c.data.augment.kind == "crop_flip":
    raise errors.UserError("data.augment.kind='crop_flip' crops a square image: with "
                           "data.load_resize='shorter_full' use rrc_flip (or none), or "
                           "load_resize='shorter'")
  if c.teacher.mode == "cached" and c.data.augment.mixup_alpha > 0:
    raise errors.UserError(
        f"data.augment.mixup_alpha={c.data.augment.mixup_alpha} mixes each batch with another "
        "example, and a cached teacher's outputs belong to unmixed views: use "
        "teacher.mode=online (function matching's consistent teaching), or "
        "data.augment.mixup_alpha=0")
  if c.teacher.mode == "cached" and c.data.augment.kind == "rrc_flip_diffaug":
    raise errors.UserError("data.augment.kind='rrc_flip_diffaug' draws one DiffAugment "
                           "operation per training batch, which a teacher cache (made in "
                           "other batches) cannot reproduce: use teacher.mode=online")
  for name in ("total", "optimizer.warmup", "eval_every"):
    by_steps, by_epochs = configlib.get(c, f"{name}_steps"), configlib.get(c, f"{name}_epochs")
    if by_steps is not None and by_epochs is not None:
      raise errors.UserError(f"set only one of {name}_steps and {name}_epochs (got "
                             f"{by_steps}, {by_epochs})")
  if c.total_steps is None and c.total_epochs is None:
    raise errors.UserError("set total_steps or total_epochs (the run's length)")
  for a, b in [("n_per_class", "fraction"), ("synthetic_per_class", "synthetic_fraction")]:
    if c.data[a] is not None and c.data[b] is not None:
      raise errors.UserError(f"set at most one of data.{a} and data.{b}")
  scale = numbers_of(c, "data.augment.scale", 2)
  ratio = numbers_of(c, "data.augment.ratio", 2)
  if not 0 < scale[0] <= scale[1] <= 1:
    raise errors.UserError(f"data.augment.scale={tuple(scale)}: must be (min, max) area "
                           "fractions with 0 < min <= max <= 1")
  if not 0 < ratio[0] <= ratio[1]:
    raise errors.UserError(f"data.augment.ratio={tuple(ratio)}: must be (min, max) aspect "
                           "ratios with 0 < min <= max")
  if (c.data.load_resize == "shorter_full" and c.data.augment.kind != "none"
      and abs(ratio[0] * ratio[1] - 1) > 1e-6):
    raise errors.UserError(f"data.augment.ratio={tuple(ratio)}: with data.load_resize="
                           "'shorter_full' (portrait images stored transposed) the aspect range "
                           "must be reciprocal, (r, 1/r), e.g. (0.75, 1.3333333)")


# teacher.adapt.data must name the student's task: the same images and classes, and the same
# training split and hold-out, so the teacher never trains on the student's validation images
ADAPT_SAME_DATA = ("name", "exclude_classes", "train_split", "val_fraction", "subset_seed")


def _check_adapt(c) -> None:
  """teacher.adapt: the adaptation run's own config, of one Hub teacher on the student's task.
  With it, teacher.models is WORKDIR/teacher, set by kdjax.train.adapt (see adapting)."""
  run = c.teacher.adapt
  if not run.model.pretrained:
    raise errors.UserError("teacher.adapt.model.pretrained is empty: set the Hub id (or "
                           "directory) of the teacher to adapt, e.g. microsoft/resnet-50")
  try:
    check(run)
  except errors.UserError as e:
    raise errors.UserError(f"teacher.adapt (the teacher's adaptation run): {e}") from e
  if run.teacher.models or run.teacher.adapt:
    raise errors.UserError("teacher.adapt.teacher.models / teacher.adapt.teacher.adapt: the "
                           "adaptation run trains the teacher's head with CE alone; leave them "
                           "empty")
  for key in ADAPT_SAME_DATA:
    if run.data[key] != c.data[key]:
      raise errors.UserError(
          f"teacher.adapt.data.{key}={run.data[key]!r} but data.{key}={c.data[key]!r}: the "
          "teacher adapts on the student's task (dataset, classes, training split and "
          f"hold-out); set --config.teacher.adapt.data.{key} to the same value")
  names = configlib.teacher_names(c)
  if len(names) > 1:
    raise errors.UserError(f"teacher.models={c.teacher.models!r} with teacher.adapt: one "
                           "teacher is adapted (into WORKDIR/teacher); adapt several with "
                           "configs/adapt.py and pass their directories as teacher.models")
  if not names:
    raise errors.UserError(
        "teacher.adapt is set but teacher.models is empty: the trainer does not adapt "
        "teachers; run the config with `python -m kdjax.main` (kdjax.train.adapt."
        "train_and_evaluate), which adapts the teacher into WORKDIR/teacher and distils from it")


def adapting(config) -> bool:
  """Whether `config`, as given to `python -m kdjax.main`, adapts its teacher first
  (teacher.adapt set). Refuses teacher.models set beside it: that teacher is then the adapted
  run directory WORKDIR/teacher."""
  if not config.teacher.adapt:
    return False
  if config.teacher.models.strip(", "):
    raise errors.UserError(
        f"teacher.models={config.teacher.models!r} and teacher.adapt are both set: with "
        "teacher.adapt the teacher is teacher.adapt.model.pretrained, adapted into "
        "WORKDIR/teacher, and teacher.models stays empty. To distil from a teacher directory as "
        "it is, turn the adaptation off: the config's argument teacher_dir=DIR (e.g. "
        "--config=configs/resnet18_cifar.py:teacher_dir=DIR)")
  return True


def partial_labels(config) -> bool:
  """Whether some training rows are unlabelled (label -1: synthetic images with
  data.synthetic_labels=False, or data.unlabelled_rest); only distillation terms can use those,
  so a run without any is refused here, before anything is read or compiled."""
  d = config.data
  unlabelled_synthetic = bool(d.synthetic) and not d.synthetic_labels
  if unlabelled_synthetic and not objective.needs_teacher(config.loss):
    raise errors.UserError(
        "data.synthetic_labels=False leaves the synthetic images unlabelled, so only "
        f"distillation terms can use them: set a loss.*_weight ({', '.join(objective.TERMS[1:])}) "
        "and teacher.models, or data.synthetic_labels=True")
  if d.unlabelled_rest and not objective.needs_teacher(config.loss):
    raise errors.UserError(
        "data.unlabelled_rest=True adds unlabelled images, so only distillation terms can use "
        f"them: set a loss.*_weight ({', '.join(objective.TERMS[1:])}) and teacher.models, or "
        "data.unlabelled_rest=False")
  return unlabelled_synthetic or bool(d.unlabelled_rest)
