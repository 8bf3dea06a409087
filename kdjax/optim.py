"""Optimizers and learning-rate schedules, built only from `config.optimizer`.

Durations are given in steps or epochs and converted once by `steps_from` (big_vision style).
Weight decay is never hidden in a loss: it is `optimizer.weight_decay`, coupled (added to the
gradient, as torch SGD) for "sgd", decoupled for "adamw". By default it skips BatchNorm scales
and all biases (1-D parameters); `optimizer.decay_norm_and_bias=True` decays every parameter.
"""

import jax
import optax


def steps_from(cfg, name: str, steps_per_epoch: int, default=None):
  """Reads `cfg.{name}_steps` or `cfg.{name}_epochs` (at most one set) as a step count."""
  steps, epochs = cfg.get(f"{name}_steps"), cfg.get(f"{name}_epochs")
  if steps is not None and epochs is not None:
    raise ValueError(f"set only one of {name}_steps and {name}_epochs (got {steps}, {epochs})")
  if steps is not None:
    return int(steps)
  if epochs is not None:
    return max(1, int(round(epochs * steps_per_epoch)))
  if default is None:
    raise ValueError(f"set {name}_steps or {name}_epochs in the config")
  return default


def schedule(cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  lr = cfg.learning_rate
  warmup = steps_from(cfg, "warmup", steps_per_epoch, default=0)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup))
  else:
    raise ValueError(f"unknown optimizer.schedule {cfg.schedule!r}; valid: ['constant', 'cosine']")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def _decay_mask(params, decay_all: bool):
  return jax.tree.map(lambda p: decay_all or p.ndim > 1, params)


def build(cfg, lr: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer `cfg.name` with learning-rate schedule `lr` (from `schedule`).

  `cfg.backbone_lr_scale` multiplies the final updates of the parameters under a top-level
  "backbone" key (pre-trained models): the same as a torch parameter group whose lr (and so
  its decoupled weight decay step) is scaled.
  """
  mask = lambda p: _decay_mask(p, cfg.decay_norm_and_bias)  # noqa: E731
  if cfg.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask),
        optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adamw":
    tx = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=mask)
  elif cfg.name == "adam":
    tx = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
  else:
    raise ValueError(f"unknown optimizer.name {cfg.name!r}; valid: ['adam', 'adamw', 'sgd']")
  if cfg.backbone_lr_scale != 1.0:
    def backbone(params):
      return {k: jax.tree.map(lambda _, is_backbone=k == "backbone": is_backbone, v)
              for k, v in params.items()}

    tx = optax.chain(tx, optax.masked(optax.scale(cfg.backbone_lr_scale), backbone))
  return tx
