"""Models that start from a Hugging Face Hub checkpoint: a pre-trained backbone and a new head.

Two uses, one module (paper A, Farhat & Chen, arXiv 2404.03263):
- Teacher adaptation: a linear probe (backbone frozen: eval-mode batch norm, no gradient,
  its weights passed to the step as constants and never checkpointed) or a full fine-tune of
  a teacher on the task. The adapted head is what the KD term reads.
- The pre-trained student baseline: ResNet-18 / MobileNetV2 initialised from Hub weights and
  fine-tuned (backbone learning rate scaled by `optimizer.backbone_lr_scale`).
The backbone is the family's Flax port (kdjax/models/hf/), loaded by `kdjax.hf.pretrained`, so the
pre-trained weights go through the same tested converters.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


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
