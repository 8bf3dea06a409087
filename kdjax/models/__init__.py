"""Model construction from the config: one explicit table of students (no import-time registry)."""

import jax
import jax.numpy as jnp
import ml_collections

from kdjax.models import cpu_conv, hub
from kdjax.models.students import mobilenet_v2, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _resnet18(num_classes, cfg, dtype, conv):
  return resnet.resnet18(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype, conv=conv)


def _resnet34(num_classes, cfg, dtype, conv):
  return resnet.resnet34(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype, conv=conv)


def _mobilenet_v2(num_classes, cfg, dtype, conv):
  return mobilenet_v2.MobileNetV2(
      num_classes=num_classes, width_multiplier=cfg.width_multiplier,
      cifar_strides=cfg.cifar_strides, dropout_rate=cfg.dropout_rate,
      dtype=dtype, conv=conv)


STUDENTS = {"resnet18": _resnet18, "resnet34": _resnet34, "mobilenet_v2": _mobilenet_v2}


def build_student(cfg: ml_collections.ConfigDict, num_classes: int):
  """Builds the student named by `cfg.name`; unknown names list the valid ones."""
  return build(cfg, num_classes)[0]


def build(cfg: ml_collections.ConfigDict, num_classes: int, pretrained_dir=None):
  """(model, pre-trained variables or None) for `cfg`.

  With `cfg.pretrained` (a Hub id or directory) the architecture and weights come from the
  checkpoint (kdjax/models/hub.py); otherwise the student `cfg.name`, randomly initialised.
  """
  if cfg.dtype not in DTYPES:
    raise ValueError(f"unknown model dtype {cfg.dtype!r}; valid: {sorted(DTYPES)}")
  if cfg.param_sharding != "replicate" and not cfg.freeze_backbone:
    raise ValueError(f"model.param_sharding={cfg.param_sharding!r} applies to a frozen "
                     "backbone (model.freeze_backbone=True); trained parameters are replicated")
  if cfg.pretrained:
    return hub.build(cfg, num_classes, DTYPES[cfg.dtype], pretrained_dir)
  if cfg.freeze_backbone:
    raise ValueError("model.freeze_backbone=True needs model.pretrained (a Hub id or directory)")
  if cfg.name not in STUDENTS:
    valid = sorted(STUDENTS) + ["hub (with model.pretrained)"]
    raise ValueError(f"unknown student {cfg.name!r}; valid: {valid}")
  model = STUDENTS[cfg.name](num_classes, cfg, DTYPES[cfg.dtype], conv_function(cfg.conv_impl))
  return model, None


def conv_function(impl: str):
  """The `conv_general_dilated` for nn.Conv: kdjax's CPU conv on CPU (impl 'auto'), or lax."""
  if impl == "auto":
    impl = "cpu" if jax.default_backend() == "cpu" else "xla"
  if impl == "cpu":
    return cpu_conv.conv_general_dilated
  if impl == "xla":
    return jax.lax.conv_general_dilated
  raise ValueError(f"unknown model.conv_impl {impl!r}; valid: ['auto', 'cpu', 'xla']")
