"""MobileNetV2 student (Sandler et al., arXiv 1801.04381) in Flax linen, NHWC.

Layout and channel rounding follow torchvision, so MobileNetV2 1.0 with 1000 classes has
3,504,872 parameters (tested). `cifar_strides=True` keeps 32 px inputs from collapsing: the
stem and the first stride-2 stage use stride 1, so the last feature map is 4x4 instead of 1x1
(the usual CIFAR adaptation). See resnet.py for why these are linen modules.

`__call__` returns `(logits, out)` with `out["pre_logits"]` [B, last_channels].
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# (expansion t, output channels c, repeats n, stride s) from the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
  """torchvision's (and TF-slim's) channel rounding: nearest multiple of divisor, at least
  min_value (default: divisor), never below 90% of value."""
  new = max(divisor if min_value is None else min_value,
            int(value + divisor / 2) // divisor * divisor)
  if new < 0.9 * value:
    new += divisor
  return new


class ConvBNReLU6(nn.Module):
  features: int
  kernel: int = 3
  strides: int = 1
  groups: int = 1
  act: bool = True
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    pad = (self.kernel - 1) // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.strides, self.strides),
                padding=[(pad, pad)] * 2, feature_group_count=self.groups, use_bias=False,
                kernel_init=conv_init, dtype=self.dtype, conv_general_dilated=self.conv,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return jnp.clip(x, 0, 6) if self.act else x


class InvertedResidual(nn.Module):
  features: int
  strides: int
  expansion: int
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expansion))
    y = x
    if self.expansion != 1:
      y = ConvBNReLU6(hidden, 1, dtype=self.dtype, conv=self.conv, name="expand")(y, train)
    y = ConvBNReLU6(hidden, 3, self.strides, groups=hidden, dtype=self.dtype, conv=self.conv,
                    name="depthwise")(y, train)
    y = ConvBNReLU6(self.features, 1, act=False, dtype=self.dtype, conv=self.conv,
                    name="project")(y, train)
    if self.strides == 1 and in_features == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  num_classes: int
  width_multiplier: float = 1.0
  cifar_strides: bool = True
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated  # kdjax.models.cpu_conv on CPU

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = {}
    x = x.astype(self.dtype)
    wm = self.width_multiplier
    x = ConvBNReLU6(make_divisible(32 * wm), 3, 1 if self.cifar_strides else 2,
                    dtype=self.dtype, conv=self.conv, name="stem")(x, train)
    out["stem"] = x
    first_stride2_seen = False
    for i, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
      if s == 2 and not first_stride2_seen:
        first_stride2_seen = True
        if self.cifar_strides:
          s = 1
      for j in range(n):
        x = InvertedResidual(make_divisible(c * wm), s if j == 0 else 1, t, dtype=self.dtype,
                             conv=self.conv, name=f"stage{i + 1}_block{j + 1}")(x, train)
      out[f"stage{i + 1}"] = x
    x = ConvBNReLU6(make_divisible(1280 * max(1.0, wm)), 1, dtype=self.dtype, conv=self.conv,
                    name="last_conv")(x, train)
    x = jnp.mean(x, axis=(1, 2))  # [B, C]
    out["pre_logits"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
    out["logits"] = logits
    return logits, out
