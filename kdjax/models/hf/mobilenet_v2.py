"""MobileNetV2 teacher (Sandler et al., arXiv 1801.04381): a Flax linen port of Hugging Face
transformers' `MobileNetV2Model` and `MobileNetV2ForImageClassification` (4.57.6), with a
converter from their safetensors checkpoints (e.g. google/mobilenet_v2_1.0_224).

Every config option the Hub checkpoints use is honoured: depth_multiplier, depth_divisible_by,
min_depth, expand_ratio, output_stride (dilated depthwise convs, as DeepLab uses),
first_layer_is_expansion, finegrained_output, hidden_act, tf_padding, layer_norm_eps and
classifier_dropout_prob. Of a DeepLabV3 checkpoint (MobileNetV2ForSemanticSegmentation) only the
backbone is ported; its segmentation head is skipped. Parameter names mirror HF's module names
("layer.3" -> "layer_3") so the converter is a plain renaming. The module can be trained (a
pre-trained student): BatchNorm uses batch statistics when `train=True`, and the classifier
dropout then needs a "dropout" rng.

Deliberately kept from HF, although they look like slips in porting the TF-slim original:
- BatchNorm momentum: HF passes torch momentum=0.997 (TF's *decay*), so in training the running
  statistics become ~99.7% the latest batch. `bn_momentum` defaults to the Flax equivalent
  (1 - 0.997); set it to 0.997 (`module.clone(bn_momentum=0.997)`) for TF-slim's behaviour.
- classifier_dropout_prob defaults to 0.8 and HF uses it as the *drop* rate; TF-slim's
  training_scope(dropout_keep_prob=0.8, bn_decay=0.997) meant keep 80%. Only matters with
  train=True; `module.clone(dropout_rate=0.2)` gives TF-slim's.
One difference from torch remains: in training, Flax updates the running variance with the
biased batch variance, torch with the unbiased one (factor n / (n - 1), n = B * H * W). The
normalised outputs are identical.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from kdjax.models.hf.common import (
  Tensors,
  activation,
  batch_norm,
  conv_kernel,
  dense,
  num_labels,
)
from kdjax.models.students.mobilenet_v2 import make_divisible  # TF-slim's = torchvision's

MODEL_TYPES = ("mobilenet_v2",)
PREFIXES = ("mobilenet_v2.",)

# Output channels of the stem's projection and of the 16 inverted-residual layers, and the
# depthwise strides of those layers (HF MobileNetV2Model.__init__).
CHANNELS = (16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320)
STRIDES = (2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)
NUM_LAYERS = len(STRIDES)


def layer_plan(output_stride: int) -> list[tuple[int, int]]:
  """(stride, dilation) of each inverted-residual layer; once the total stride reaches
  output_stride, strides become dilations, starting one layer late as in HF/DeepLab."""
  current_stride, dilation, plan = 2, 1, []  # the stem's first conv has stride 2
  for s in STRIDES:
    if current_stride == output_stride:
      plan.append((1, dilation))
      dilation *= s
    else:
      plan.append((s, 1))
      current_stride *= s
  return plan


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
  """TF "SAME" padding of one spatial axis (extra pixel at the end), from the input size.

  HF's apply_tf_padding scales the undilated padding by the dilation instead of using the
  dilated kernel; the two agree because HF only dilates stride-1 convs.
  """
  span = (kernel - 1) * dilation + 1
  total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
  return total // 2, total - total // 2


class ConvLayer(nn.Module):
  """HF MobileNetV2ConvLayer: conv without bias -> BatchNorm -> optional activation."""
  features: int
  kernel: int
  strides: int = 1
  groups: int = 1
  dilation: int = 1
  act: str | None = "relu6"
  tf_padding: bool = True
  eps: float = 1e-3
  momentum: float = 1 - 0.997
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    if self.tf_padding:
      pads = [same_pads(n, self.kernel, self.strides, self.dilation) for n in x.shape[1:3]]
    else:
      p = (self.kernel - 1) // 2 * self.dilation
      pads = [(p, p)] * 2
    # Explicit pads rather than padding="SAME" so symmetric cases can take kdjax's CPU conv.
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.strides, self.strides),
                padding=pads, kernel_dilation=(self.dilation, self.dilation),
                feature_group_count=self.groups, use_bias=False, dtype=self.dtype,
                conv_general_dilated=self.conv, name="convolution")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.eps,
                     dtype=self.dtype, name="normalization")(x)
    return activation(self.act)(x) if self.act else x


class Stem(nn.Module):
  """HF MobileNetV2Stem: 3x3/2 conv, optional 1x1 expansion, 3x3 depthwise, 1x1 projection."""
  expanded: int
  features: int
  first_layer_is_expansion: bool
  layer: Callable  # ConvLayer with the model-wide settings bound

  @nn.compact
  def __call__(self, x, train: bool):
    x = self.layer(self.expanded, 3, 2, name="first_conv")(x, train)
    if not self.first_layer_is_expansion:
      x = self.layer(self.expanded, 1, name="expand_1x1")(x, train)
    x = self.layer(self.expanded, 3, groups=self.expanded, name="conv_3x3")(x, train)
    return self.layer(self.features, 1, act=None, name="reduce_1x1")(x, train)


class InvertedResidual(nn.Module):
  """HF MobileNetV2InvertedResidual: 1x1 expand, 3x3 depthwise, linear 1x1 projection."""
  expanded: int
  features: int
  strides: int
  dilation: int
  layer: Callable

  @nn.compact
  def __call__(self, x, train: bool):
    y = self.layer(self.expanded, 1, name="expand_1x1")(x, train)
    y = self.layer(self.expanded, 3, self.strides, groups=self.expanded, dilation=self.dilation,
                   name="conv_3x3")(y, train)
    y = self.layer(self.features, 1, act=None, name="reduce_1x1")(y, train)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  """`__call__(x [B, H, W, C] normalised pixels, train)` -> dict of HF's outputs, NHWC."""
  depth_multiplier: float = 1.0
  depth_divisible_by: int = 8
  min_depth: int = 8
  expand_ratio: float = 6.0
  output_stride: int = 32
  first_layer_is_expansion: bool = True
  finegrained_output: bool = True
  hidden_act: str = "relu6"
  tf_padding: bool = True
  layer_norm_eps: float = 1e-3
  num_classes: int | None = None  # None: no classification head
  checkpoint_head: bool = False  # the head's weights come from the checkpoint
  dropout_rate: float = 0.8
  bn_momentum: float = 1 - 0.997  # Flax convention; HF's torch momentum is 0.997
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated  # kdjax.models.cpu_conv on CPU

  def depth(self, channels: float) -> int:
    return make_divisible(int(round(channels * self.depth_multiplier)), self.depth_divisible_by,
                          self.min_depth)

  @nn.compact
  def __call__(self, x, train: bool = False):
    layer = functools.partial(ConvLayer, act=self.hidden_act, tf_padding=self.tf_padding,
                              eps=self.layer_norm_eps, momentum=self.bn_momentum,
                              dtype=self.dtype, conv=self.conv)
    channels = [self.depth(c) for c in CHANNELS]
    x = Stem(self.depth(32), channels[0], self.first_layer_is_expansion, layer,
             name="conv_stem")(x.astype(self.dtype), train)
    for i, (stride, dilation) in enumerate(layer_plan(self.output_stride)):
      expanded = make_divisible(int(round(channels[i] * self.expand_ratio)),
                                self.depth_divisible_by, self.min_depth)
      x = InvertedResidual(expanded, channels[i + 1], stride, dilation, layer,
                           name=f"layer_{i}")(x, train)
    if self.finegrained_output and self.depth_multiplier < 1.0:
      last = 1280
    else:
      last = self.depth(1280)
    x = layer(last, 1, name="conv_1x1")(x, train)
    # Outputs in at least float32; the average too, as a bf16 sum over the map loses precision.
    out_dtype = jnp.promote_types(self.dtype, jnp.float32)
    pooled = jnp.mean(x.astype(out_dtype), axis=(1, 2))
    out = {"last_hidden_state": x.astype(out_dtype), "pooler_output": pooled,
           "features": pooled}
    if self.num_classes is not None:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
      out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(
          y).astype(out_dtype)
    return out


def build(config: dict, keys, *, dtype=jnp.float32, num_classes: int | None = None) -> MobileNetV2:
  act = config.get("hidden_act", "relu6")
  activation(act)  # fails here, naming the supported ones, rather than at the first call
  has_head = any(p + "classifier.weight" in keys for p in ("", *PREFIXES))
  checkpoint_head = num_classes is None and has_head
  if checkpoint_head:
    num_classes = num_labels(config)
  return MobileNetV2(
      depth_multiplier=float(config.get("depth_multiplier", 1.0)),
      depth_divisible_by=int(config.get("depth_divisible_by", 8)),
      min_depth=int(config.get("min_depth", 8)),
      expand_ratio=float(config.get("expand_ratio", 6.0)),
      output_stride=int(config.get("output_stride", 32)),
      first_layer_is_expansion=bool(config.get("first_layer_is_expansion", True)),
      finegrained_output=bool(config.get("finegrained_output", True)),
      hidden_act=act,
      tf_padding=bool(config.get("tf_padding", True)),
      layer_norm_eps=float(config.get("layer_norm_eps", 1e-3)),
      num_classes=num_classes,
      checkpoint_head=checkpoint_head,
      dropout_rate=float(config.get("classifier_dropout_prob", 0.8)),
      dtype=dtype)


def convert(tensors: Tensors, module: MobileNetV2) -> dict:
  params, stats = {}, {}

  def conv_layer(hf_name: str, *path: str):
    bn_params, bn_stats = batch_norm(tensors, hf_name + ".normalization")
    kernel = conv_kernel(tensors.take(hf_name + ".convolution.weight"))
    p, s = params, stats
    for key in path[:-1]:
      p, s = p.setdefault(key, {}), s.setdefault(key, {})
    p[path[-1]] = {"convolution": {"kernel": kernel}, "normalization": bn_params}
    s[path[-1]] = {"normalization": bn_stats}

  stem = ["first_conv"] + ([] if module.first_layer_is_expansion else ["expand_1x1"])
  for name in stem + ["conv_3x3", "reduce_1x1"]:
    conv_layer(f"conv_stem.{name}", "conv_stem", name)
  for i in range(NUM_LAYERS):
    for name in ("expand_1x1", "conv_3x3", "reduce_1x1"):
      conv_layer(f"layer.{i}.{name}", f"layer_{i}", name)
  conv_layer("conv_1x1", "conv_1x1")
  if module.num_classes is not None and module.checkpoint_head:
    params["classifier"] = dense(tensors, "classifier")
  else:
    tensors.skip("classifier")  # a new head (zero-filled by the loader) or none
  # DeepLabV3 checkpoints (MobileNetV2ForSemanticSegmentation) load as their backbone.
  tensors.skip("segmentation_head")
  return {"params": params, "batch_stats": stats}


# ------------------------------------------------------------------------------ export

HF_CLASSIFIER = "MobileNetV2ForImageClassification"


def hf_export(config: dict, variables: dict) -> tuple[dict, str, dict]:
  """(config.json, architecture, variables) of the run's backbone + head as transformers'
  MobileNetV2ForImageClassification: the same network for every config (output_stride and a
  DeepLabV3 backbone's settings included), its head on the pooled last feature map as
  HubClassifier's; see common.py."""
  return dict(config), HF_CLASSIFIER, variables


def hf_layout(config: dict, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """name -> (shape, dtype) of every tensor of transformers' MobileNetV2ForImageClassification
  with `num_classes` labels for `config` (its state dict; tested equal to transformers'): what
  kdjax.export writes, through `convert` run backwards."""
  module = build(config, ())
  out = {}

  def conv_layer(name: str, cout: int, cin: int, kernel: int, groups: int = 1):
    prefix = "mobilenet_v2." + name
    out[prefix + ".convolution.weight"] = ((cout, cin // groups, kernel, kernel), "float32")
    for n in ("weight", "bias", "running_mean", "running_var"):
      out[f"{prefix}.normalization.{n}"] = ((cout,), "float32")
    out[prefix + ".normalization.num_batches_tracked"] = ((), "int64")

  channels = [module.depth(c) for c in CHANNELS]
  expanded = module.depth(32)
  conv_layer("conv_stem.first_conv", expanded, int(config.get("num_channels", 3)), 3)
  if not module.first_layer_is_expansion:
    conv_layer("conv_stem.expand_1x1", expanded, expanded, 1)
  conv_layer("conv_stem.conv_3x3", expanded, expanded, 3, groups=expanded)
  conv_layer("conv_stem.reduce_1x1", channels[0], expanded, 1)
  for i in range(NUM_LAYERS):
    expanded = make_divisible(int(round(channels[i] * module.expand_ratio)),
                              module.depth_divisible_by, module.min_depth)
    conv_layer(f"layer.{i}.expand_1x1", expanded, channels[i], 1)
    conv_layer(f"layer.{i}.conv_3x3", expanded, expanded, 3, groups=expanded)
    conv_layer(f"layer.{i}.reduce_1x1", channels[i + 1], expanded, 1)
  last = (1280 if module.finegrained_output and module.depth_multiplier < 1.0
          else module.depth(1280))
  conv_layer("conv_1x1", last, channels[-1], 1)
  out["classifier.weight"] = ((num_classes, last), "float32")
  out["classifier.bias"] = ((num_classes,), "float32")
  return out
