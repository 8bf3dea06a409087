"""The CIFAR-100 benchmark networks of the distillation literature, as RepDistiller and mdistiller
define them (megvii-research/mdistiller at a08d46f, mdistiller/models/cifar/{resnet,wrn,vgg}.py,
the same definitions as HobbitLong/RepDistiller models/), in Flax linen, NHWC, for 32 px inputs.

- `resnet{8,14,20,32,44,56,110}`: He et al.'s CIFAR ResNets (arXiv 1512.03385): a 3x3 stem
  of 16 channels, 3 stages of n = (depth - 2) / 6 post-activation basic blocks at 16/32/64
  channels (strides 1, 2, 2), a 1x1-conv + BN shortcut where the shape changes, global average
  pool, linear head. `resnet8x4`, `resnet32x4`: the same with a 32-channel stem and stages of
  64/128/256 (resnet.py:209-242; the stem is resnet.py:116-117).
- `wrn_{16,40}_{1,2}`: wide ResNets (Zagoruyko & Komodakis, arXiv 1605.07146), depth 6n + 4,
  widths 16/16k/32k/64k, pre-activation blocks whose shortcut (a 1x1 conv where the width or
  stride changes) reads the activated input (wrn.py:38-47), a final BN-ReLU (wrn.py:92-93).
- `vgg{8,11,13,16,19}`: the CIFAR VGGs with batch norm (the `_bn` variants mdistiller's
  model dict uses for "vgg8", "vgg13"...): five blocks of 3x3 conv (with bias) + BN + ReLU,
  max-pool between the first four, global average pool, Linear(512, C) (vgg.py:27-43,
  140-151; the extra pool before block 4 applies only to 64 px inputs, vgg.py:90-91, and is
  kept).

Initialisation as the references: convolutions normal(0, sqrt(2 / fan_out)); BN scale 1, bias
0 (resnet.py:126-131, wrn.py:97-105, vgg.py:124-137); ResNet and WRN heads torch nn.Linear's
default (WRN: bias 0); VGG head normal(0, 0.01), bias 0. BN momentum 0.9 and epsilon 1e-5
(torch's 0.1 / 1e-5). `__call__` returns `(logits, out)` with out["stem"], out["stage1"]..
(each stage's output), out["pre_logits"] (what the head reads) and out["logits"], as every
kdjax student. Parameter counts are tested against independent PyTorch definitions and the
counts of mdistiller's own (tests/unit/test_models_cifar.py)."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _torch_uniform(fan_in: int):
  """torch nn.Linear's default: uniform in +-1/sqrt(fan_in) (kernel and bias)."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


class _Layers(nn.Module):
  """Shared constructors of the three families (dtype and the conv function)."""

  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  def _conv(self, features, kernel, stride=1, bias=False, name=None):
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(pad, pad)] * 2,
                   use_bias=bias, kernel_init=conv_init, dtype=self.dtype,
                   conv_general_dilated=self.conv, name=name)

  def _bn(self, train, name=None):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, name=name)

  def _head(self, x, num_classes, kernel_init, bias_init, out):
    out["pre_logits"] = x
    logits = nn.Dense(num_classes, dtype=self.dtype, kernel_init=kernel_init,
                      bias_init=bias_init, name="head")(x).astype(jnp.float32)
    out["logits"] = logits
    return logits, out


class CifarResNet(_Layers):
  """mdistiller's CIFAR ResNet with basic blocks (depth 6n + 2)."""

  num_classes: int = 100
  depth: int = 20
  filters: Sequence[int] = (16, 16, 32, 64)

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, out = (self.depth - 2) // 6, {}
    x = nn.relu(self._bn(train, "stem_bn")(self._conv(self.filters[0], 3, name="stem_conv")(
        x.astype(self.dtype))))
    out["stem"] = x
    for stage, width in enumerate(self.filters[1:]):
      for block in range(n):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"stage{stage + 1}_block{block + 1}"
        y = nn.relu(self._bn(train, f"{name}_bn1")(self._conv(width, 3, stride,
                                                              name=f"{name}_conv1")(x)))
        y = self._bn(train, f"{name}_bn2")(self._conv(width, 3, name=f"{name}_conv2")(y))
        if stride != 1 or x.shape[-1] != width:
          x = self._bn(train, f"{name}_down_bn")(self._conv(width, 1, stride,
                                                            name=f"{name}_down_conv")(x))
        x = nn.relu(y + x)
      out[f"stage{stage + 1}"] = x
    d = x.shape[-1]
    return self._head(jnp.mean(x, axis=(1, 2)), self.num_classes, _torch_uniform(d),
                      _torch_uniform(d), out)


class WideResNet(_Layers):
  """mdistiller's wide ResNet (depth 6n + 4, widen factor k), pre-activation blocks."""

  num_classes: int = 100
  depth: int = 16
  widen: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, out = (self.depth - 4) // 6, {}
    x = self._conv(16, 3, name="stem_conv")(x.astype(self.dtype))
    out["stem"] = x
    for stage, width in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen)):
      for block in range(n):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"stage{stage + 1}_block{block + 1}"
        act = nn.relu(self._bn(train, f"{name}_bn1")(x))
        if x.shape[-1] == width:  # same width: identity shortcut of the raw input
          shortcut = x
        else:  # the 1x1 conv shortcut reads the activated input (wrn.py:39-40, 47)
          shortcut = self._conv(width, 1, stride, name=f"{name}_down_conv")(act)
        y = nn.relu(self._bn(train, f"{name}_bn2")(self._conv(width, 3, stride,
                                                              name=f"{name}_conv1")(act)))
        x = shortcut + self._conv(width, 3, name=f"{name}_conv2")(y)
      out[f"stage{stage + 1}"] = x
    x = nn.relu(self._bn(train, "final_bn")(x))
    d = x.shape[-1]
    return self._head(jnp.mean(x, axis=(1, 2)), self.num_classes, _torch_uniform(d),
                      nn.initializers.zeros, out)


VGG_BLOCKS = {  # vgg.py cfg: channels of each of the five blocks' convolutions
    8: ((64,), (128,), (256,), (512,), (512,)),  # "S"
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),  # "A"
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),  # "B"
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),  # "D"
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),  # "E"
}


class CifarVGG(_Layers):
  """mdistiller's CIFAR VGG with batch norm."""

  num_classes: int = 100
  depth: int = 13

  @nn.compact
  def __call__(self, x, train: bool = False):
    out, h = {}, x.shape[1]
    x = x.astype(self.dtype)
    for b, widths in enumerate(VGG_BLOCKS[self.depth]):
      if b > 0 and (b < 4 or h == 64):  # pool0..pool2 (and pool3 for 64 px inputs only)
        x = nn.max_pool(x, (2, 2), (2, 2))
      for i, width in enumerate(widths):
        x = self._bn(train, f"block{b}_bn{i}")(self._conv(width, 3, bias=True,
                                                          name=f"block{b}_conv{i}")(x))
        x = nn.relu(x)  # the block's last ReLU is applied outside it, the same maths
      out["stem" if b == 0 else f"stage{b}"] = x
    return self._head(jnp.mean(x, axis=(1, 2)), self.num_classes,
                      nn.initializers.normal(0.01), nn.initializers.zeros, out)


def resnet(depth: int, x4: bool = False):
  filters = (32, 64, 128, 256) if x4 else (16, 16, 32, 64)
  return lambda num_classes, **kw: CifarResNet(num_classes=num_classes, depth=depth,
                                               filters=filters, **kw)


def wrn(depth: int, widen: int):
  return lambda num_classes, **kw: WideResNet(num_classes=num_classes, depth=depth, widen=widen,
                                              **kw)


def vgg(depth: int):
  return lambda num_classes, **kw: CifarVGG(num_classes=num_classes, depth=depth, **kw)


# model.name -> builder(num_classes, dtype=, conv=) (mdistiller's model names)
NETWORKS = {
    **{f"resnet{d}": resnet(d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": resnet(8, x4=True), "resnet32x4": resnet(32, x4=True),
    "wrn_16_1": wrn(16, 1), "wrn_16_2": wrn(16, 2), "wrn_40_1": wrn(40, 1),
    "wrn_40_2": wrn(40, 2),
    **{f"vgg{d}": vgg(d) for d in VGG_BLOCKS},
}
