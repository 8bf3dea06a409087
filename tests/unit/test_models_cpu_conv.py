"""kdjax's CPU convolution is the same maths as lax.conv_general_dilated: forward and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kdjax.models import cpu_conv
from kdjax.models.students import resnet

CASES = [  # (map size, in ch, out ch, kernel, stride, pad): every path of cpu_conv
    (8, 5, 6, 3, 1, 1),  # plain lax path
    (2, 5, 6, 3, 1, 1),  # tiny map: im2col forward and input gradient
    (1, 5, 6, 3, 1, 1),
    (8, 5, 6, 3, 2, 1),  # stride 2 on an even map: polyphase input gradient
    (4, 5, 6, 3, 2, 1),  # 4 -> 2: tiny output map, im2col
    (7, 5, 6, 3, 2, 1),  # odd map: falls back to lax's input gradient
    (6, 5, 6, 1, 1, 0),  # 1x1: matmul forward and weight gradient
    (6, 5, 6, 1, 2, 0),  # 1x1 stride 2 (ResNet downsample)
    (16, 3, 4, 7, 2, 3),  # ImageNet stem
]


@pytest.mark.parametrize("size,cin,cout,k,s,p", CASES)
def test_forward_and_gradients_match_lax(size, cin, cout, k, s, p):
  kx, kw, kg = jax.random.split(jax.random.key(size * 100 + k * 10 + s), 3)
  x = jax.random.normal(kx, (3, size, size, cin))
  w = jax.random.normal(kw, (k, k, cin, cout))

  def ref(x, w):
    return lax.conv_general_dilated(x, w, (s, s), [(p, p)] * 2,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def ours(x, w):
    return cpu_conv.conv_general_dilated(x, w, (s, s), [(p, p)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))

  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.jit(lambda x, w: jax.vjp(ours, x, w)[0])(x, w), jax.vjp(ours, x, w)[1]
  np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=1e-4)
  g = jax.random.normal(kg, y_ref.shape)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


DEPTHWISE_CASES = [  # (H, W, kernel, stride, padding, dilation)
    (8, 8, 3, 1, [(1, 1), (1, 1)], 1),  # MobileNetV2 stride 1
    (9, 7, 3, 2, [(1, 1), (1, 1)], 1),  # stride 2, odd and non-square map
    (9, 8, 3, 2, [(0, 1), (1, 1)], 1),  # TF "SAME": asymmetric padding
    (8, 8, 3, 1, "SAME", 2),  # dilated (MobileNetV2 output_stride 16)
    (6, 6, 5, 1, "VALID", 1),
]


@pytest.mark.parametrize("h,w,k,s,padding,d", DEPTHWISE_CASES)
def test_depthwise_matches_lax(h, w, k, s, padding, d):
  kx, kw, kg = jax.random.split(jax.random.key(h * 10 + k), 3)
  c = 6
  x = jax.random.normal(kx, (2, h, w, c))
  kernel = jax.random.normal(kw, (k, k, 1, c))
  args = dict(window_strides=(s, s), padding=padding, rhs_dilation=(d, d),
              dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
  y_ref, vjp_ref = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, **args), x, kernel)
  y, vjp = jax.vjp(lambda x, w: cpu_conv.conv_general_dilated(x, w, **args), x, kernel)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  g = jax.random.normal(kg, y_ref.shape)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_unsupported_convolutions_fall_back_to_lax():
  x = jnp.ones((2, 6, 6, 4))
  w = jnp.ones((3, 3, 2, 4))  # grouped (feature_group_count=2)
  want = lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  got = cpu_conv.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(got, want)


def test_resnet_with_cpu_conv_matches_lax_in_a_train_step():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))  # 16 px: stage 4 maps are 2x2
  fast = resnet.resnet18(10, width=8, conv=cpu_conv.conv_general_dilated)
  plain = resnet.resnet18(10, width=8)
  variables = plain.init(jax.random.key(1), x)

  def loss(model, params):
    (logits, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"])
    return jnp.mean(logits ** 2)

  g_fast = jax.jit(jax.grad(lambda p: loss(fast, p)))(variables["params"])
  g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(variables["params"])
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_cpu_flags_are_appended_once_and_respect_the_users_choice():
  from kdjax import runtime

  flag = runtime.CPU_XLA_FLAGS[0]
  assert runtime.with_cpu_flags("") == flag
  combined = runtime.with_cpu_flags("--xla_force_host_platform_device_count=8")
  assert combined == f"--xla_force_host_platform_device_count=8 {flag}"
  assert runtime.with_cpu_flags(combined) == combined
  users = "--xla_cpu_experimental_ynn_fusion_type=dot"  # the user's own value wins
  assert runtime.with_cpu_flags(users) == users
