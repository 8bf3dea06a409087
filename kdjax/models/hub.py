"""Models that start from a Hugging Face Hub checkpoint: a pre-trained backbone and a new head.

Two uses, one module (paper A, Farhat & Chen, arXiv 2404.03263):
- Teacher adaptation: a linear probe (backbone frozen: eval-mode batch norm, no gradient,
  its weights passed to the step as constants and never checkpointed) or a full fine-tune of
  a teacher on the task. The adapted head is what the KD term reads.
- The pre-trained student baseline: ResNet-18 / MobileNetV2 initialised from Hub weights and
  fine-tuned (backbone learning rate scaled by `optimizer.backbone_lr_scale`).
The backbone is the teacher family's Flax port (kdjax/models/teachers/), loaded by
`kdjax.teachers.load`, so the pre-trained weights go through the same tested converters.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import errors


def _resnet(depths):
  return lambda c: (c.get("model_type") == "resnet" and c.get("layer_type") == "basic"
                    and list(c.get("depths", ())) == depths)


# model.name -> does a checkpoint's config.json describe that network? ("hub": any network)
ARCHITECTURE_CHECKS = {"resnet18": _resnet([2, 2, 2, 2]), "resnet34": _resnet([3, 4, 6, 3]),
                       "mobilenet_v2": lambda c: c.get("model_type") == "mobilenet_v2"}


class HubClassifier(nn.Module):
  """`backbone` (a head-less teacher-family module) + a zero-initialised linear head."""

  backbone: nn.Module
  num_classes: int
  frozen: bool = False
  dropout_rate: float = 0.0
  return_dict: bool = False  # True: return the backbone's output dict with `logits` added

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = dict(self.backbone(x, train=train and not self.frozen))
    features = out["features"]  # [B, D]: what the checkpoint's own head would read
    if self.frozen:
      features = jax.lax.stop_gradient(features)
    pre_logits = features
    if self.dropout_rate:
      features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    # Zero init: the probe starts at uniform predictions, and a fine-tune's first steps do not
    # push random-head gradients into the pre-trained backbone.
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      name="classifier")(features.astype(jnp.float32))
    out.update(pre_logits=pre_logits, logits=logits)
    return out if self.return_dict else (logits, out)


def backbone_variables(variables: dict) -> dict:
  """A head-less model's variables as HubClassifier's "backbone" subtree."""
  return {kind: {"backbone": tree} for kind, tree in variables.items()}


def build_random(cfg, num_classes: int, dtype: Any, conv, hf_config: dict) -> HubClassifier:
  """HubClassifier over the architecture of a Hugging Face config.json (`hf_config`, read from
  `cfg.hub_config`), randomly initialised by the trainer: a Hub architecture trained from
  scratch, e.g. to publish it as a checkpoint (kdjax.export)."""
  from kdjax import teachers  # late: teachers imports jax-heavy family modules

  backbone = teachers.family_of(hf_config, str(cfg.hub_config)).build(
      hf_config, frozenset(), dtype=dtype, num_classes=None)
  if hasattr(backbone, "conv"):
    backbone = backbone.clone(conv=conv)
  return HubClassifier(backbone, num_classes)


def build(cfg, num_classes: int, dtype: Any, source=None):
  """(HubClassifier, pre-trained variables {"params": {"backbone": ...}, ...} as host numpy
  arrays) for cfg; the trainer places them on its mesh. `source`: the directory that
  cfg.pretrained already resolved to (so the Hub is not asked again)."""
  from kdjax import teachers  # late: teachers imports jax-heavy family modules

  teacher = teachers.load(str(source or cfg.pretrained), dtype=dtype, num_classes=0,
                          conv_impl=cfg.conv_impl, on_host=True)
  if cfg.name != "hub" and not ARCHITECTURE_CHECKS.get(cfg.name, lambda c: False)(
      teacher.config):
    matching = sorted(k for k, check in ARCHITECTURE_CHECKS.items() if check(teacher.config))
    raise errors.UserError(
        f"model.pretrained={cfg.pretrained!r} (model_type "
        f"{teacher.config.get('model_type')!r}) is not a {cfg.name!r}; set model.name to "
        f"'hub' (architecture from the checkpoint) or to one of {matching}")
  backbone = teacher.module
  if getattr(backbone, "bn_momentum", 0.9) < 0.5:
    # HF's MobileNetV2 passes TF-slim's decay 0.997 as torch's momentum, so its running
    # statistics would follow the last batch. Trained here, it gets TF-slim's decay.
    backbone = backbone.clone(bn_momentum=0.997)
  model = HubClassifier(backbone, num_classes, frozen=cfg.freeze_backbone,
                        dropout_rate=cfg.dropout_rate if cfg.name == "mobilenet_v2" else 0.0)
  return model, backbone_variables(teacher.variables)
