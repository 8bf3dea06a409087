"""Model construction from the config: one explicit table of students and one of Hugging Face
families (config.json `model_type` -> kdjax's Flax port in kdjax/models/hf/); no import-time
registry. Loading pre-trained weights is kdjax/hf/pretrained.py's."""

import jax
import jax.numpy as jnp
import ml_collections

from kdjax import errors
from kdjax.models import cpu_conv
from kdjax.models.hf import classifier
from kdjax.models.hf import mobilenet_v2 as hf_mobilenet_v2
from kdjax.models.hf import resnet as hf_resnet
from kdjax.models.hf import vit as hf_vit
from kdjax.models.students import cifar, mobilenet_v2, resnet
from kdjax.sharding import PARAM_SHARDINGS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.dtype (compute)
CONV_IMPLS = ("auto", "cpu", "xla", "portable")  # model.conv_impl (see conv_function)


def _resnet18(num_classes, cfg, dtype, conv):
  return resnet.resnet18(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype, conv=conv)


def _resnet34(num_classes, cfg, dtype, conv):
  return resnet.resnet34(num_classes, stem=cfg.stem, width=cfg.width, dtype=dtype, conv=conv)


def _mobilenet_v2(num_classes, cfg, dtype, conv):
  return mobilenet_v2.MobileNetV2(
      num_classes=num_classes, width_multiplier=cfg.width_multiplier,
      cifar_strides=cfg.cifar_strides, dropout_rate=cfg.dropout_rate,
      dtype=dtype, conv=conv)


def _cifar(name):
  """A CIFAR benchmark network of RepDistiller/mdistiller (students/cifar.py)."""
  return lambda num_classes, cfg, dtype, conv: cifar.NETWORKS[name](num_classes, dtype=dtype,
                                                                    conv=conv)


STUDENTS = {"resnet18": _resnet18, "resnet34": _resnet34, "mobilenet_v2": _mobilenet_v2,
            **{name: _cifar(name) for name in cifar.NETWORKS}}
# config.json `model_type` -> the family module that builds and converts it.
FAMILIES = {"resnet": hf_resnet, "vit": hf_vit, "dinov2": hf_vit, "clip": hf_vit,
            "clip_vision_model": hf_vit, "mobilenet_v2": hf_mobilenet_v2}


def family_of(config: dict, name: str):
  """The Flax family of a Hugging Face config.json; unsupported types list the supported."""
  model_type = config.get("model_type")
  if model_type not in FAMILIES:
    raise errors.TeacherLoadError(f"teacher {name!r}: model_type {model_type!r} is not "
                                  f"supported; supported: {sorted(FAMILIES)}")
  return FAMILIES[model_type]


def names(pretrained: bool) -> list[str]:
  """The valid `model.name`s: a random student, or with `model.pretrained` the architecture
  the checkpoint must have ("hub": whatever it is)."""
  if pretrained:
    return sorted(classifier.ARCHITECTURE_CHECKS) + ["hub"]
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


def build(cfg: ml_collections.ConfigDict, num_classes: int, hf_config: dict | None = None):
  """The randomly initialised model of `config.model`: the student `cfg.name`, or with
  `cfg.hub_config` the architecture of that Hugging Face config.json (`hf_config`, already read)
  with a linear head. Pre-trained models (`cfg.pretrained`): kdjax.hf.pretrained.build_model."""
  check(cfg)
  if cfg.pretrained:
    raise errors.UserError(f"model.pretrained={cfg.pretrained!r}: load it with "
                           "kdjax.hf.pretrained.build_model, which reads the weights")
  dtype, conv = DTYPES[cfg.dtype], conv_function(cfg.conv_impl)
  if cfg.hub_config:
    if hf_config is None:
      raise errors.UserError(f"model.hub_config={cfg.hub_config!r}: pass its config.json "
                             "(kdjax.hf.pretrained.build_model reads it)")
    backbone = family_of(hf_config, str(cfg.hub_config)).build(
        hf_config, frozenset(), dtype=dtype, num_classes=None)
    if hasattr(backbone, "conv"):
      backbone = backbone.clone(conv=conv)
    return classifier.HubClassifier(backbone, num_classes)
  return STUDENTS[cfg.name](num_classes, cfg, dtype, conv)


def portable_conv(lhs, rhs, *args, **kwargs):
  """kdjax's CPU convolution where the compiled program runs on a CPU, XLA's elsewhere, chosen
  when it runs (`lax.platform_dependent`): for programs exported for several platforms."""
  return jax.lax.platform_dependent(
      lhs, rhs, cpu=lambda x, w: cpu_conv.conv_general_dilated(x, w, *args, **kwargs),
      default=lambda x, w: jax.lax.conv_general_dilated(x, w, *args, **kwargs))


def conv_function(impl: str):
  """The `conv_general_dilated` for nn.Conv: kdjax's CPU conv on CPU (impl 'auto'), lax's, or
  'portable' (either, decided by the platform the program runs on: exported programs)."""
  if impl == "auto":
    impl = "cpu" if jax.default_backend() == "cpu" else "xla"
  return {"cpu": cpu_conv.conv_general_dilated, "xla": jax.lax.conv_general_dilated,
          "portable": portable_conv}[impl]
