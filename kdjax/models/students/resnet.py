"""ResNet students (He et al., arXiv 1512.03385) in Flax linen, NHWC.

Why linen and not NNX: kdjax steps are pure functions of explicit pytrees (params, batch_stats,
optimizer state, frozen teacher params). Linen keeps those pytrees separate from the module
definition, so they are jitted, sharded (`NamedSharding`), donated and checkpointed (orbax)
with no split/merge boilerplate, and a frozen teacher is just another params tree that never
enters the optimizer. The same holds for the models of big_vision and scenic that we follow.

Two stems:
- "cifar": 3x3/1 conv, no max-pool, for 32 px inputs (the usual CIFAR ResNet-18).
- "imagenet": 7x7/2 conv + 3x3/2 max-pool, the torchvision layout (11,689,512 parameters for
  ResNet-18 with 1000 classes; tested).

`__call__` returns `(logits, out)`; `out` holds named intermediates (`stem`, `stage1`..`stage4`,
`pre_logits` [B, 8 * width], `logits`) for the distillation losses.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

STEMS = {"cifar": (3, 1, 1), "imagenet": (7, 2, 3)}  # model.stem -> its conv: kernel, stride, pad
# torchvision initialises convolutions with kaiming_normal(mode="fan_out", relu).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(  # noqa: E731
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name)
    conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
        f, (k, k), (s, s), padding=[(k // 2, k // 2)] * 2, use_bias=False,
        kernel_init=conv_init, dtype=self.dtype, conv_general_dilated=self.conv, name=name)
    residual = x
    y = nn.relu(norm("bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
    y = norm("bn2")(conv(self.features, 3, 1, "conv2")(y))
    if residual.shape != y.shape:
      residual = norm("downsample_bn")(conv(self.features, 1, self.strides, "downsample_conv")(x))
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet with basic blocks (ResNet-18/34). Input NHWC float, already normalised."""

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  stem: str = "cifar"
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated  # kdjax.models.cpu_conv on CPU: same maths, faster

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = {}
    x = x.astype(self.dtype)
    kernel, stride, pad = STEMS[self.stem]
    x = nn.Conv(self.width, (kernel, kernel), (stride, stride), padding=[(pad, pad)] * 2,
                use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                conv_general_dilated=self.conv, name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="stem_bn")(x)
    x = nn.relu(x)
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1)] * 2)
    out["stem"] = x
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, dtype=self.dtype, conv=self.conv,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
      out[f"stage{i + 1}"] = x
    x = jnp.mean(x, axis=(1, 2))  # [B, C] global average pool
    out["pre_logits"] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out


def resnet18(num_classes: int, stem: str = "cifar", width: int = 64, dtype=jnp.float32,
             conv=lax.conv_general_dilated):
  return ResNet(num_classes, (2, 2, 2, 2), width=width, stem=stem, dtype=dtype, conv=conv)


def resnet34(num_classes: int, stem: str = "cifar", width: int = 64, dtype=jnp.float32,
             conv=lax.conv_general_dilated):
  return ResNet(num_classes, (3, 4, 6, 3), width=width, stem=stem, dtype=dtype, conv=conv)
