"""Flax port of Hugging Face `ResNetModel` / `ResNetForImageClassification` (He et al.,
arXiv 1512.03385), e.g. microsoft/resnet-50 (bottleneck) and microsoft/resnet-18 (basic).

The same module is the teacher (frozen, eval-mode batch norm) and, through
`kdjax.models.hf.classifier`, a pre-trained student (trainable, batch statistics in train mode).
Weights come from the checkpoint's safetensors names (`resnet.` prefix optional).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from kdjax import errors
from kdjax.models.hf import common

MODEL_TYPES = ("resnet",)
PREFIXES = ("resnet.",)


class ConvBN(nn.Module):
  features: int
  kernel: int
  strides: int = 1
  activation: Any = None
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    pad = self.kernel // 2  # torch's padding=kernel_size // 2, symmetric
    x = nn.Conv(self.features, (self.kernel,) * 2, (self.strides,) * 2, padding=[(pad, pad)] * 2,
                use_bias=False, dtype=self.dtype, conv_general_dilated=self.conv, name="conv")(x)
    # torch BatchNorm2d: eps 1e-5, momentum 0.1 (flax keeps 1 - 0.1 of the old average)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="bn")(x)
    return self.activation(x) if self.activation is not None else x


class Layer(nn.Module):
  """HF ResNetBasicLayer (two 3x3) or ResNetBottleNeckLayer (1x1, 3x3, 1x1)."""

  features: int
  strides: int
  bottleneck: bool
  downsample_in_bottleneck: bool = False
  activation: Any = nn.relu
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated

  @nn.compact
  def __call__(self, x, train: bool):
    act, dt, cv = self.activation, self.dtype, self.conv
    if self.bottleneck:
      reduced = self.features // 4
      s1, s2 = ((self.strides, 1) if self.downsample_in_bottleneck else (1, self.strides))
      y = ConvBN(reduced, 1, s1, act, dt, cv, name="layer0")(x, train)
      y = ConvBN(reduced, 3, s2, act, dt, cv, name="layer1")(y, train)
      y = ConvBN(self.features, 1, 1, None, dt, cv, name="layer2")(y, train)
    else:
      y = ConvBN(self.features, 3, self.strides, act, dt, cv, name="layer0")(x, train)
      y = ConvBN(self.features, 3, 1, None, dt, cv, name="layer1")(y, train)
    if x.shape[-1] != self.features or self.strides != 1:
      x = ConvBN(self.features, 1, self.strides, None, dt, cv, name="shortcut")(x, train)
    return act(y + x)


class ResNet(nn.Module):
  embedding_size: int
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  bottleneck: bool
  downsample_in_first_stage: bool = False
  downsample_in_bottleneck: bool = False
  hidden_act: str = "relu"
  num_classes: int | None = None  # None: no classification head
  dtype: Any = jnp.float32
  conv: Callable = lax.conv_general_dilated  # kdjax.models.cpu_conv on CPU (teachers.load)

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = common.activation(self.hidden_act)
    x = x.astype(self.dtype)
    x = ConvBN(self.embedding_size, 7, 2, act, self.dtype, self.conv, name="embedder")(x, train)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1)] * 2)
    for i, (features, depth) in enumerate(zip(self.hidden_sizes, self.depths)):
      first_stride = 2 if (i > 0 or self.downsample_in_first_stage) else 1
      for j in range(depth):
        x = Layer(features, first_stride if j == 0 else 1, self.bottleneck,
                  self.downsample_in_bottleneck, act, self.dtype, self.conv,
                  name=f"stages_{i}_layers_{j}")(x, train)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, C]
    out = {"last_hidden_state": x.astype(jnp.float32), "pooler_output": pooled,
           "features": pooled}
    if self.num_classes is not None:
      out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(
          pooled).astype(jnp.float32)
    return out


def build(config: dict, keys, *, dtype=jnp.float32, num_classes: int | None = None) -> ResNet:
  if config.get("layer_type", "bottleneck") not in ("basic", "bottleneck"):
    raise errors.UserError(f"the checkpoint's ResNet layer_type {config['layer_type']!r} "
                           "(config.json) is not one of kdjax's: ['basic', 'bottleneck']")
  if num_classes is None and any(k.endswith("classifier.1.weight") for k in keys):
    num_classes = common.num_labels(config)
  return ResNet(
      embedding_size=config.get("embedding_size", 64),
      hidden_sizes=tuple(config.get("hidden_sizes", (256, 512, 1024, 2048))),
      depths=tuple(config.get("depths", (3, 4, 6, 3))),
      bottleneck=config.get("layer_type", "bottleneck") == "bottleneck",
      downsample_in_first_stage=config.get("downsample_in_first_stage", False),
      downsample_in_bottleneck=config.get("downsample_in_bottleneck", False),
      hidden_act=config.get("hidden_act", "relu"), num_classes=num_classes, dtype=dtype)


def convert(tensors: common.Tensors, module: ResNet) -> dict:
  params, stats = {}, {}

  def conv_bn(flax_name, torch_prefix):
    bn_params, bn_stats = common.batch_norm(tensors, torch_prefix + ".normalization")
    params[flax_name] = {"conv": {"kernel": common.conv_kernel(
        tensors.take(torch_prefix + ".convolution.weight"))}, "bn": bn_params}
    stats[flax_name] = {"bn": bn_stats}

  conv_bn("embedder", "embedder.embedder")
  in_features = module.embedding_size
  for i, (features, depth) in enumerate(zip(module.hidden_sizes, module.depths)):
    for j in range(depth):
      name, prefix = f"stages_{i}_layers_{j}", f"encoder.stages.{i}.layers.{j}"
      layer_params, layer_stats = {}, {}
      params[name], stats[name] = layer_params, layer_stats
      for k in range(3 if module.bottleneck else 2):
        conv_bn("tmp", f"{prefix}.layer.{k}")
        layer_params[f"layer{k}"], layer_stats[f"layer{k}"] = params.pop("tmp"), stats.pop("tmp")
      strides = 2 if (j == 0 and (i > 0 or module.downsample_in_first_stage)) else 1
      if (in_features if j == 0 else features) != features or strides != 1:
        conv_bn("tmp", f"{prefix}.shortcut")
        layer_params["shortcut"], layer_stats["shortcut"] = params.pop("tmp"), stats.pop("tmp")
    in_features = features
  # The loader hides the checkpoint's head when a new one was asked for (it zero-fills that).
  if module.num_classes is not None and tensors.has("classifier.1.weight"):
    params["classifier"] = common.dense(tensors, "classifier.1")
  return {"params": params, "batch_stats": stats}


# ------------------------------------------------------------------------------ export layout

HF_CLASSIFIER = "ResNetForImageClassification"


def hf_export(config: dict, variables: dict) -> tuple[dict, str, dict]:
  """(config.json, architecture, variables) of the run's backbone + head as transformers'
  ResNetForImageClassification: the same network, its head on the pooled last feature map as
  HubClassifier's; see common.py."""
  return dict(config), HF_CLASSIFIER, variables


def hf_layout(config: dict, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """name -> (shape, dtype) of every tensor of transformers' ResNetForImageClassification with
  `num_classes` labels for `config` (its state dict; tested equal to transformers'): what
  kdjax.export writes, through `convert` run backwards."""
  out = {}

  def conv_bn(prefix, cout, cin, k):
    out[prefix + ".convolution.weight"] = ((cout, cin, k, k), "float32")
    for name in ("weight", "bias", "running_mean", "running_var"):
      out[f"{prefix}.normalization.{name}"] = ((cout,), "float32")
    out[prefix + ".normalization.num_batches_tracked"] = ((), "int64")

  bottleneck = config.get("layer_type", "bottleneck") == "bottleneck"
  emb = config.get("embedding_size", 64)
  conv_bn("resnet.embedder.embedder", emb, config.get("num_channels", 3), 7)
  cin = emb
  for i, (features, depth) in enumerate(zip(config.get("hidden_sizes", (256, 512, 1024, 2048)),
                                            config.get("depths", (3, 4, 6, 3)))):
    for j in range(depth):
      prefix = f"resnet.encoder.stages.{i}.layers.{j}"
      stride = 2 if j == 0 and (i > 0 or config.get("downsample_in_first_stage", False)) else 1
      if cin != features or stride != 1:
        conv_bn(prefix + ".shortcut", features, cin, 1)
      if bottleneck:
        reduced = features // config.get("reduction", 4)
        for k, (o, i_, size) in enumerate([(reduced, cin, 1), (reduced, reduced, 3),
                                           (features, reduced, 1)]):
          conv_bn(f"{prefix}.layer.{k}", o, i_, size)
      else:
        conv_bn(prefix + ".layer.0", features, cin, 3)
        conv_bn(prefix + ".layer.1", features, features, 3)
      cin = features
  out["classifier.1.weight"] = ((num_classes, cin), "float32")
  out["classifier.1.bias"] = ((num_classes,), "float32")
  return out
