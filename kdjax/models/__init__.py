"""Model construction from the config: one explicit table of students (no import-time registry)."""

import jax
import jax.numpy as jnp
import ml_collections

from kdjax import errors
from kdjax.models import cpu_conv, hub
from kdjax.models.students import mobilenet_v2, resnet
from kdjax.sharding import PARAM_SHARDINGS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.dtype (compute)
CONV_IMPLS = ("auto", "cpu", "xla")  # model.conv_impl (see conv_function)


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


def names(pretrained: bool) -> list[str]:
  """The valid `model.name`s: a random student, or with `model.pretrained` the architecture
  the checkpoint must have ("hub": whatever it is)."""
  if pretrained:
    return sorted(hub.ARCHITECTURE_CHECKS) + ["hub"]
  return sorted(STUDENTS) + ["hub"]


def check(cfg: ml_collections.ConfigDict) -> None:
  """Refuses a `config.model` that `build` could not build, before anything is read."""
  valid = names(bool(cfg.pretrained))
  if cfg.name not in valid:
    raise errors.UserError(f"unknown model.name {cfg.name!r}; valid: {valid}")
  if cfg.name == "hub" and not (cfg.pretrained or cfg.hub_config):
    raise errors.UserError("model.name='hub' needs model.pretrained (start from those weights) "
                           "or model.hub_config (a directory or Hub id with a Hugging Face "
                           "config.json: that architecture, randomly initialised)")
  if cfg.hub_config and (cfg.pretrained or cfg.name != "hub"):
    raise errors.UserError(f"model.hub_config={cfg.hub_config!r} describes a randomly "
                           "initialised Hugging Face architecture: set model.name='hub' and "
                           "leave model.pretrained empty")
  for key, value, table in [("model.dtype", cfg.dtype, DTYPES),
                            ("model.conv_impl", cfg.conv_impl, CONV_IMPLS),
                            ("model.stem", cfg.stem, resnet.STEMS),
                            ("model.param_sharding", cfg.param_sharding, PARAM_SHARDINGS)]:
    if value not in table:
      raise errors.UserError(f"unknown {key} {value!r}; valid: {sorted(table)}")
  if cfg.param_sharding != "replicate" and not cfg.freeze_backbone:
    raise errors.UserError(
        f"model.param_sharding={cfg.param_sharding!r} applies to a frozen backbone: set "
        "model.freeze_backbone=True, or model.param_sharding='replicate' (trained parameters "
        "are replicated)")
  if cfg.freeze_backbone and not cfg.pretrained:
    raise errors.UserError("model.freeze_backbone=True needs model.pretrained (a Hub id or "
                           "directory): set it, or model.freeze_backbone=False")


def build(cfg: ml_collections.ConfigDict, num_classes: int, pretrained_dir=None,
          hf_config: dict | None = None):
  """(model, pre-trained variables or None) for `cfg`.

  With `cfg.pretrained` (a Hub id or directory) the architecture and weights come from the
  checkpoint (kdjax/models/hub.py); with `cfg.hub_config` the architecture of that Hugging Face
  config, randomly initialised; otherwise the student `cfg.name`, randomly initialised.
  `pretrained_dir`: the directory `cfg.pretrained` / `cfg.hub_config` already resolved to;
  `hf_config`: `cfg.hub_config`'s config.json, already read (a run's hf_config.json).
  """
  check(cfg)
  if cfg.pretrained:
    return hub.build(cfg, num_classes, DTYPES[cfg.dtype], pretrained_dir)
  if cfg.hub_config:
    if hf_config is None:
      from kdjax import teachers  # late: teachers imports this package

      directory = pretrained_dir or teachers.resolve(cfg.hub_config)
      hf_config = teachers.read_config(directory, cfg.hub_config)
    return hub.build_random(cfg, num_classes, DTYPES[cfg.dtype], conv_function(cfg.conv_impl),
                            hf_config), None
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
  raise errors.UserError(f"unknown model.conv_impl {impl!r}; valid: {list(CONV_IMPLS)}")
