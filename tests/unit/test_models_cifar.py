"""The CIFAR benchmark networks (kdjax/models/students/cifar.py) against independent PyTorch
definitions written from RepDistiller/mdistiller's architecture descriptions: every network has
their parameter count and the count of mdistiller's own definition, and ResNet8x4, WRN-16-2 and
VGG8 given the same weights give the same eval-mode logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from kdjax import configlib, models
from kdjax.models.students import cifar

# Parameter counts of mdistiller's own torch definitions with 100 classes (megvii-research/
# mdistiller at a08d46f, mdistiller/models/cifar/{resnet,wrn,vgg}.py; the VGGs are its `_bn`
# builders, as its model dict uses): counted with torch 2.13 from those files, which are not
# part of this repository
MDISTILLER_COUNTS = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564, "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860, "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156, "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180,
    "vgg16": 14_774_436, "vgg19": 20_086_692}


class TorchResNet(nn.Module):
  def __init__(self, depth, filters, num_classes):
    super().__init__()
    n = (depth - 2) // 6
    self.m = nn.ModuleDict({"stem_conv": nn.Conv2d(3, filters[0], 3, 1, 1, bias=False),
                            "stem_bn": nn.BatchNorm2d(filters[0])})
    self.blocks, cin = [], filters[0]
    for s, w in enumerate(filters[1:]):
      for b in range(n):
        stride, name = (2 if s > 0 and b == 0 else 1), f"stage{s + 1}_block{b + 1}"
        self.m[f"{name}_conv1"] = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.m[f"{name}_bn1"] = nn.BatchNorm2d(w)
        self.m[f"{name}_conv2"] = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.m[f"{name}_bn2"] = nn.BatchNorm2d(w)
        down = stride != 1 or cin != w
        if down:
          self.m[f"{name}_down_conv"] = nn.Conv2d(cin, w, 1, stride, bias=False)
          self.m[f"{name}_down_bn"] = nn.BatchNorm2d(w)
        self.blocks.append((name, down))
        cin = w
    self.m["head"] = nn.Linear(cin, num_classes)

  def forward(self, x):
    m = self.m
    x = torch.relu(m["stem_bn"](m["stem_conv"](x)))
    for name, down in self.blocks:
      y = torch.relu(m[f"{name}_bn1"](m[f"{name}_conv1"](x)))
      y = m[f"{name}_bn2"](m[f"{name}_conv2"](y))
      if down:
        x = m[f"{name}_down_bn"](m[f"{name}_down_conv"](x))
      x = torch.relu(x + y)
    return m["head"](x.mean((2, 3)))


class TorchWRN(nn.Module):
  def __init__(self, depth, widen, num_classes):
    super().__init__()
    n = (depth - 4) // 6
    self.m = nn.ModuleDict({"stem_conv": nn.Conv2d(3, 16, 3, 1, 1, bias=False)})
    self.blocks, cin = [], 16
    for s, w in enumerate((16 * widen, 32 * widen, 64 * widen)):
      for b in range(n):
        stride, name = (2 if s > 0 and b == 0 else 1), f"stage{s + 1}_block{b + 1}"
        self.m[f"{name}_bn1"] = nn.BatchNorm2d(cin)
        self.m[f"{name}_conv1"] = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.m[f"{name}_bn2"] = nn.BatchNorm2d(w)
        self.m[f"{name}_conv2"] = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        if cin != w:
          self.m[f"{name}_down_conv"] = nn.Conv2d(cin, w, 1, stride, bias=False)
        self.blocks.append((name, cin == w))
        cin = w
    self.m["final_bn"] = nn.BatchNorm2d(cin)
    self.m["head"] = nn.Linear(cin, num_classes)

  def forward(self, x):
    m = self.m
    x = m["stem_conv"](x)
    for name, same in self.blocks:
      o = torch.relu(m[f"{name}_bn1"](x))
      y = m[f"{name}_conv2"](torch.relu(m[f"{name}_bn2"](m[f"{name}_conv1"](o))))
      x = (x if same else m[f"{name}_down_conv"](o)) + y
    return m["head"](torch.relu(m["final_bn"](x)).mean((2, 3)))


class TorchVGG(nn.Module):
  def __init__(self, depth, num_classes):
    super().__init__()
    self.m, self.blocks, cin = nn.ModuleDict(), [], 3
    for b, widths in enumerate(cifar.VGG_BLOCKS[depth]):
      names = []
      for i, w in enumerate(widths):
        self.m[f"block{b}_conv{i}"] = nn.Conv2d(cin, w, 3, 1, 1)
        self.m[f"block{b}_bn{i}"] = nn.BatchNorm2d(w)
        names.append((f"block{b}_conv{i}", f"block{b}_bn{i}"))
        cin = w
      self.blocks.append(names)
    self.m["head"] = nn.Linear(512, num_classes)

  def forward(self, x):
    for b, names in enumerate(self.blocks):
      if 0 < b < 4:
        x = nn.functional.max_pool2d(x, 2)
      for conv, bn in names:
        x = torch.relu(self.m[bn](self.m[conv](x)))
    return self.m["head"](x.mean((2, 3)))


def _torch_net(name, num_classes=100):
  if name.startswith("resnet"):
    depth = int(name[6:].split("x")[0])
    filters = (32, 64, 128, 256) if name.endswith("x4") else (16, 16, 32, 64)
    return TorchResNet(depth, filters, num_classes)
  if name.startswith("wrn"):
    _, depth, widen = name.split("_")
    return TorchWRN(int(depth), int(widen), num_classes)
  return TorchVGG(int(name[3:]), num_classes)


def _flax_variables(name, num_classes=100):
  module = cifar.NETWORKS[name](num_classes)
  return module, module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("name", sorted(cifar.NETWORKS))
def test_parameter_counts_equal_the_pytorch_definitions(name):
  module = cifar.NETWORKS[name](100)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  ours = sum(x.size for x in jax.tree.leaves(abstract["params"]))
  theirs = sum(p.numel() for p in _torch_net(name).parameters())
  assert ours == theirs == MDISTILLER_COUNTS[name]


def _copy_into_torch(variables, net):
  """Flax NHWC variables -> the torch module (same layer names)."""
  params, stats = variables["params"], variables["batch_stats"]
  with torch.no_grad():
    for name, mod in net.m.items():
      if isinstance(mod, nn.Conv2d):
        mod.weight.copy_(torch.from_numpy(np.array(params[name]["kernel"]).transpose(3, 2, 0, 1)))
        if mod.bias is not None:
          mod.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
      elif isinstance(mod, nn.BatchNorm2d):
        mod.weight.copy_(torch.from_numpy(np.array(params[name]["scale"])))
        mod.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
        mod.running_mean.copy_(torch.from_numpy(np.array(stats[name]["mean"])))
        mod.running_var.copy_(torch.from_numpy(np.array(stats[name]["var"])))
      elif isinstance(mod, nn.Linear):
        mod.weight.copy_(torch.from_numpy(np.array(params[name]["kernel"]).T))
        mod.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8"])
def test_eval_logits_equal_pytorch_with_the_same_weights(name):
  module, variables = _flax_variables(name, 10)
  rng = np.random.default_rng(0)
  # non-trivial BN statistics and head bias, so every path of the copy matters
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: (jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32)
                    if str(p[-1].key) in ("var", "scale")
                    else jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32)
                    if str(p[-1].key) in ("mean", "bias") else x), variables)
  net = _torch_net(name, 10).eval()
  _copy_into_torch(variables, net)
  x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  logits, out = module.apply(variables, jnp.asarray(x), train=False)
  with torch.no_grad():
    want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-4)
  assert out["pre_logits"].shape[0] == 2 and {"stem", "stage1", "logits"} <= set(out)


def test_every_network_is_a_student_by_name():
  assert set(cifar.NETWORKS) == set(MDISTILLER_COUNTS)  # mdistiller's CIFAR ResNets, WRNs, VGGs
  c = configlib.base().model
  for name in cifar.NETWORKS:
    c.name = name
    models.check(c)
    assert models.build(c, 100).num_classes == 100
