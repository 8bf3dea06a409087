"""Optimizers and learning-rate schedules, built only from `config.optimizer`.

Durations are given in steps or epochs and converted once by `steps_from` (big_vision style).
Weight decay is never hidden in a loss: it is `optimizer.weight_decay`, coupled (added to the
gradient, as torch SGD) for "sgd", decoupled for "adamw". By default it skips BatchNorm scales
and all biases (1-D parameters); `optimizer.decay_norm_and_bias=True` decays every parameter.
"""

import jax
import optax

from kdjax import errors

OPTIMIZERS = ("sgd", "adam", "adamw")  # optimizer.name
SCHEDULES = ("cosine", "constant", "multistep")  # optimizer.schedule


def _main_schedule(cfg, lr: float, steps: int, steps_per_epoch: int) -> optax.Schedule:
  """The schedule after the warm-up, over `steps` steps. multistep: lr times decay_factor at each
  of optimizer.decay_epochs (counted from the start of the run, warm-up included; epochs that
  fall on the same step compound): mdistiller's CIFAR recipe, SOLVER.LR_DECAY_STAGES
  [150, 180, 210] and LR_DECAY_RATE 0.1 (megvii-research/mdistiller at a08d46f,
  mdistiller/engine/cfg.py:44-45, configs/cifar100/*.yaml). Its per-epoch rule,
  `lr * rate ** sum(epoch > stages)` with epochs counted from 1 (engine/utils.py:72-75), decays
  after 150 full epochs: here from step 150 * steps_per_epoch on."""
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, steps)
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  assert cfg.schedule == "multistep", cfg.schedule  # validate.check refuses other names
  boundaries = {}
  for e in cfg.decay_epochs:
    step = int(round(e * steps_per_epoch))
    boundaries[step] = boundaries.get(step, 1.0) * float(cfg.decay_factor)
  return optax.piecewise_constant_schedule(lr, boundaries)


def steps_from(cfg, name: str, steps_per_epoch: int, default=None):
  """Reads `cfg.{name}_steps` or `cfg.{name}_epochs` (at most one set) as a step count."""
  steps, epochs = cfg.get(f"{name}_steps"), cfg.get(f"{name}_epochs")
  if steps is not None and epochs is not None:
    raise errors.UserError(f"set only one of {name}_steps and {name}_epochs (got {steps}, "
                           f"{epochs}): leave the other unset (None)")
  if steps is not None:
    return int(steps)
  if epochs is not None:
    return max(1, int(round(epochs * steps_per_epoch)))
  if default is None:
    raise errors.UserError(f"set {name}_steps or {name}_epochs in the config")
  return default


def schedule(cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  lr = cfg.learning_rate
  warmup = steps_from(cfg, "warmup", steps_per_epoch, default=0)
  main = _main_schedule(cfg, lr, max(1, total_steps - warmup), steps_per_epoch)
  if warmup:
    if cfg.schedule == "multistep":  # its boundaries count from the run's start
      main_from_start = main
      main = lambda count: main_from_start(count + warmup)  # noqa: E731
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def _decay_mask(params, decay_all: bool):
  return jax.tree.map(lambda p: decay_all or p.ndim > 1, params)


def _base(cfg, lr, weight_decay: float) -> optax.GradientTransformation:
  mask = lambda p: _decay_mask(p, cfg.decay_norm_and_bias)  # noqa: E731
  if cfg.name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  if cfg.name == "adamw":
    return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=weight_decay, mask=mask)
  assert cfg.name == "adam", cfg.name  # validate.check refuses other names
  return optax.adam(lr, b1=cfg.b1, b2=cfg.b2)


# Top-level keys of the trainer's auxiliary parameters (kdjax/distill/objective.py) that are
# "priors": trained at loss.prior_learning_rate without weight decay (AFT's rho or its
# no-kernel map V, feature-KD's map, factor transfer's MLP: paper B's reference trains them
# all as its prior's parameters).
PRIOR_KEYS = ("rho", "aft_map", "feature_kd", "ft")


def labels(tree: dict) -> dict:
  """Parameter groups of {"model": student params, "aux": distillation params}.

  backbone: a pre-trained student's backbone (lr x backbone_lr_scale); model: the rest of the
  student and paper A's projection heads (trained with the student); prior: PRIOR_KEYS.
  """
  model = {k: jax.tree.map(lambda _, g="backbone" if k == "backbone" else "model": g, v)
           for k, v in tree["model"].items()}
  aux = {k: jax.tree.map(lambda _, g="prior" if k in PRIOR_KEYS else "model": g, v)
         for k, v in tree["aux"].items()}
  return {"model": model, "aux": aux}


def build(cfg, lr: optax.Schedule, prior_learning_rate: float | None = None
          ) -> optax.GradientTransformation:
  """The optimizer `cfg.name` with schedule `lr` (from `schedule`), over the tree
  {"model": student params, "aux": distillation params} (`labels` gives the groups).

  `cfg.backbone_lr_scale` multiplies the final updates of a pre-trained backbone: the same as
  a torch parameter group whose lr (and so its decoupled weight decay step) is scaled.
  Priors follow the same schedule shape at `prior_learning_rate` (AFT's reference code: one
  optimizer, two parameter groups, one cosine scheduler), without weight decay.
  """
  model = _base(cfg, lr, cfg.weight_decay)
  backbone = optax.chain(_base(cfg, lr, cfg.weight_decay), optax.scale(cfg.backbone_lr_scale))
  prior_lr = prior_learning_rate if prior_learning_rate is not None else cfg.learning_rate
  ratio = prior_lr / cfg.learning_rate if cfg.learning_rate else 0.0
  prior = _base(cfg, lambda step: lr(step) * ratio, 0.0)
  return optax.multi_transform({"model": model, "backbone": backbone, "prior": prior}, labels)
