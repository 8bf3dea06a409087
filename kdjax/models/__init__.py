"""Model construction from the config: one explicit table of students (no import-time registry)."""

import jax.numpy as jnp
import ml_collections

from kdjax.models.students import mobilenet_v2, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _resnet18(num_classes, cfg, dtype):
  return resnet.resnet18(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype)


def _resnet34(num_classes, cfg, dtype):
  return resnet.resnet34(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype)


def _mobilenet_v2(num_classes, cfg, dtype):
  return mobilenet_v2.MobileNetV2(
      num_classes=num_classes, width_multiplier=cfg.width_multiplier,
      cifar_strides=cfg.cifar_strides, dropout_rate=cfg.dropout_rate,
      dtype=dtype)


STUDENTS = {"resnet18": _resnet18, "resnet34": _resnet34, "mobilenet_v2": _mobilenet_v2}


def build_student(cfg: ml_collections.ConfigDict, num_classes: int):
  """Builds the student named by `cfg.name`; unknown names list the valid ones."""
  if cfg.name not in STUDENTS:
    raise ValueError(f"unknown student {cfg.name!r}; valid: {sorted(STUDENTS)}")
  if cfg.dtype not in DTYPES:
    raise ValueError(f"unknown model dtype {cfg.dtype!r}; valid: {sorted(DTYPES)}")
  return STUDENTS[cfg.name](num_classes, cfg, DTYPES[cfg.dtype])
