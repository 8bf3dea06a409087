"""Student architectures: known parameter counts, output contract, CIFAR strides."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from kdjax import models
from kdjax.models.students import mobilenet_v2, resnet


def _variables(model, size):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("model,size,expected", [
    # torchvision.models.resnet18() / mobilenet_v2(): the published parameter counts.
    (resnet.resnet18(1000, stem="imagenet"), 224, 11_689_512),
    (mobilenet_v2.MobileNetV2(1000, cifar_strides=False), 224, 3_504_872),
    (resnet.resnet34(1000, stem="imagenet"), 224, 21_797_672),
])
def test_parameter_counts_match_torchvision(model, size, expected):
  assert _count(_variables(model, size)["params"]) == expected


def test_mobilenet_width_multiplier_changes_channels():
  half = _variables(mobilenet_v2.MobileNetV2(10, width_multiplier=0.5), 32)["params"]
  assert half["stem"]["conv"]["kernel"].shape[-1] == 16  # make_divisible(32 * 0.5)
  assert half["last_conv"]["conv"]["kernel"].shape[-1] == 1280  # max(1.0, wm) keeps 1280


@pytest.mark.parametrize("model,stage,spatial", [
    (resnet.resnet18(10, stem="cifar"), "stage4", 4),  # 32 -> 32 -> 16 -> 8 -> 4
    (resnet.resnet18(10, stem="imagenet"), "stage4", 1),  # 32 -> 16 -> 8 -> ... -> 1
    (mobilenet_v2.MobileNetV2(10, cifar_strides=True), "stage7", 4),
    (mobilenet_v2.MobileNetV2(10, cifar_strides=False), "stage7", 1),
])
def test_outputs_and_strides(model, stage, spatial):
  variables = _variables(model, 32)
  logits, out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3))), variables)
  assert logits.shape == (2, 10)
  assert out[stage].shape[1:3] == (spatial, spatial)
  assert out["pre_logits"].shape[0] == 2 and out["pre_logits"].ndim == 2
  assert set(out) >= {"stem", "pre_logits", "logits"}


def test_forward_is_deterministic_in_eval_and_batchnorm_updates_in_train():
  model = resnet.resnet18(10, width=8)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  v = model.init(jax.random.key(0), x)
  a, _ = model.apply(v, x)
  b, _ = model.apply(v, x)
  assert jnp.array_equal(a, b)
  _, new = model.apply(v, x, train=True, mutable=["batch_stats"])
  old_mean = v["batch_stats"]["stem_bn"]["mean"]
  assert not jnp.allclose(new["batch_stats"]["stem_bn"]["mean"], old_mean)


def test_unknown_student_lists_valid_names():
  cfg = ml_collections.ConfigDict({"name": "resnet19", "dtype": "float32", "pretrained": "",
                                   "freeze_backbone": False, "param_sharding": "replicate"})
  with pytest.raises(ValueError, match="resnet18"):
    models.build(cfg, 10)
