"""A drop-in `conv_general_dilated` for Flax `nn.Conv` that avoids XLA:CPU's slow conv paths.

Measured on jaxlib 0.10.2, 2-core AVX2 CPU (experiments/README.md has the numbers):
1. When a 3x3 window is larger than the feature map (H*W < 9, e.g. ResNet stage 4 at 16 px),
   XLA's algebraic simplifier swaps the conv operands and the result runs as a naive loop at
   ~1 GFLOP/s (0.75-1.5 s per conv). No flag turns it off. Here such convs (forward and input
   gradient) are im2col + one matmul.
2. The input gradient of a stride-2 3x3 conv (an lhs-dilated conv) is ~3.5x slower than its
   forward; here it is four stride-1 sub-convolutions (polyphase), about 2x faster.
3. The weight gradient of a 1x1 conv is one matmul.
4. Depthwise convolutions (feature_group_count = channels, MobileNetV2) run as grouped convs at
   ~1-7 GFLOP/s; here they are a sum of shifted, per-channel-scaled slices, which XLA fuses into
   one loop: 10-50x faster forward, 4-10x faster gradients (3x3, 7-112 px maps, batch 8).
Everything else stays `lax.conv_general_dilated`. The XLA flag set by `kdjax.runtime` (Eigen
instead of YNNPACK convolutions) is the other half of the CPU speed-up.

Numerically the same convolution (tested against lax: forward and both gradients). Only square
2-D NHWC/HWIO convolutions without groups or dilation, and NHWC depthwise convolutions (any
padding, stride, kernel dilation; channel multiplier 1) are rerouted; anything else falls back
to `lax.conv_general_dilated` unchanged. Parameter trees are identical to plain `nn.Conv`.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
SMALL_MAP = 9  # output maps with fewer pixels than a 3x3 window take the im2col path


def _pad(x, p):
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x


def _tap(xp, i, j, s, ho, wo):
  """The input pixels that kernel tap (i, j) meets, for every output position: [B,ho,wo,C]."""
  b, _, _, c = xp.shape
  return lax.slice(xp, (0, i, j, 0), (b, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c),
                   (1, s, s, 1))


def _out_size(n, k, s, p):
  return (n + 2 * p - k) // s + 1


def _im2col(x, k, s, p):
  ho, wo = _out_size(x.shape[1], k, s, p), _out_size(x.shape[2], k, s, p)
  xp = _pad(x, p)
  return jnp.concatenate([_tap(xp, i, j, s, ho, wo) for i in range(k) for j in range(k)], -1)


def _conv_lax(x, w, s, p):
  return lax.conv_general_dilated(x, w, (s, s), [(p, p)] * 2, dimension_numbers=NHWC)


def _forward(x, w, s, p):
  k, c_out = w.shape[0], w.shape[-1]
  if k == 1 or _out_size(x.shape[1], k, s, p) * _out_size(x.shape[2], k, s, p) < SMALL_MAP:
    cols = _im2col(x, k, s, p)  # [B,ho,wo,k*k*C]
    return (cols.reshape(-1, cols.shape[-1]) @ w.reshape(-1, c_out)).reshape(
        cols.shape[:3] + (c_out,))
  return _conv_lax(x, w, s, p)


def _input_grad_im2col(g, w, x_shape, s, p):
  k, c_in, c_out = w.shape[0], w.shape[2], w.shape[3]
  b, h, wd, _ = x_shape
  _, ho, wo, _ = g.shape
  cols = (g.reshape(-1, c_out) @ w.reshape(-1, c_out).T).reshape(b, ho, wo, k * k, c_in)
  acc = jnp.zeros((b, h + 2 * p, wd + 2 * p, c_in), g.dtype)
  for t in range(k * k):  # scatter-add each tap's contribution back to its input pixels
    i, j = divmod(t, k)
    acc = acc.at[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :].add(cols[:, :, :, t])
  return acc[:, p:p + h, p:p + wd, :]


def _input_grad_polyphase(g, w):
  """dx of a 3x3 / stride 2 / pad 1 conv on an even-sized map as 4 stride-1 convolutions.

  Output pixel parity (a, b) of dx only meets kernel taps of one parity: even rows take tap 1
  from g[u]; odd rows take tap 2 from g[u] and tap 0 from g[u + 1].
  """
  b, ho, wo, _ = g.shape
  wt = jnp.swapaxes(w, 2, 3)  # contract over the conv's output channels
  taps = {0: ([1], (0, 0)), 1: ([2, 0], (0, 1))}
  rows = []
  for a in (0, 1):
    cols = []
    for c in (0, 1):
      (ta, pa), (tc, pc) = taps[a], taps[c]
      kernel = wt[jnp.asarray(ta)][:, jnp.asarray(tc)]
      cols.append(lax.conv_general_dilated(g, kernel, (1, 1), [pa, pc], dimension_numbers=NHWC))
    rows.append(jnp.stack(cols))
  phases = jnp.stack(rows)  # [2(a), 2(c), B, ho, wo, C_in]
  return phases.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * ho, 2 * wo, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, w, stride: int, pad: int):
  return _forward(x, w, stride, pad)


def _conv2d_fwd(x, w, stride, pad):
  return _forward(x, w, stride, pad), (x, w)


def _conv2d_bwd(s, p, residuals, g):
  x, w = residuals
  k = w.shape[0]
  if k == 1 or g.shape[1] * g.shape[2] < SMALL_MAP:
    dx = _input_grad_im2col(g, w, x.shape, s, p)
  elif (k, s, p) == (3, 2, 1) and x.shape[1:3] == (2 * g.shape[1], 2 * g.shape[2]):
    dx = _input_grad_polyphase(g, w)
  else:
    dx = jax.vjp(lambda x_: _conv_lax(x_, w, s, p), x)[1](g)[0]
  if k == 1:
    dw = (_tap(_pad(x, p), 0, 0, s, g.shape[1], g.shape[2]).reshape(-1, x.shape[-1]).T
          @ g.reshape(-1, g.shape[-1])).reshape(w.shape)
  else:
    dw = jax.vjp(lambda w_: _conv_lax(x, w_, s, p), w)[1](g)[0]
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def depthwise(x, w, strides, padding, dilation):
  """NHWC depthwise conv as a fused sum of shifted slices. w: [kh, kw, 1, C]; padding pairs."""
  (sh, sw), (dh, dw) = strides, dilation
  kh, kw = w.shape[:2]
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
  wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
  acc = jnp.float32 if x.dtype in (jnp.bfloat16, jnp.float16) else x.dtype
  out = 0
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(xp, (0, i * dh, j * dw, 0),
                      (xp.shape[0], i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1,
                       xp.shape[3]), (1, sh, sw, 1))
      out = out + tap.astype(acc) * w[i, j, 0].astype(acc)
  return out.astype(x.dtype)


def _is_nhwc(lhs, rhs, dimension_numbers):
  # None means NCHW/OIHW to lax: never rerouted (flax always passes its NHWC layout).
  return dimension_numbers is not None and (
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """Signature of `lax.conv_general_dilated`; pass as `nn.Conv(conv_general_dilated=...)`."""
  if (lhs.ndim == 4 and feature_group_count > 1 and feature_group_count == lhs.shape[-1]
      and rhs.shape[2] == 1 and rhs.shape[3] == lhs.shape[-1] and batch_group_count == 1
      and all(d == 1 for d in (lhs_dilation or (1, 1))) and preferred_element_type is None
      and _is_nhwc(lhs, rhs, dimension_numbers)):
    dilation = tuple(rhs_dilation or (1, 1))
    if isinstance(padding, str):
      window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
      padding = lax.padtype_to_pads(lhs.shape[1:3], window, window_strides, padding)
    return depthwise(lhs, rhs, tuple(window_strides), padding, dilation)
  plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and not isinstance(padding, str) and len({tuple(q) for q in padding}) == 1
           and padding[0][0] == padding[0][1] and window_strides[0] == window_strides[1]
           and rhs.shape[0] == rhs.shape[1] and preferred_element_type is None)
  plain = plain and _is_nhwc(lhs, rhs, dimension_numbers)
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return conv2d(lhs, rhs, int(window_strides[0]), int(padding[0][0]))
