"""The Flax linen encoder of kdjax/models/hf/vit.py's ViT / DINOv2 / CLIP-vision family: one
`VisionTransformer` whose options select the family (patch embedding, pre-norm transformer layers
with fused-qkv attention, the family's final norm, pooler, projection and head), and the
position-embedding interpolation it applies at any input size (`resize_bicubic`, torch's bicubic
reproduced exactly by `bicubic_matrix`). Parameter names are kdjax's; vit.py maps the Hugging
Face checkpoints' onto them.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.models.hf.common import activation

# ------------------------------------------------------------------------------ interpolation


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] float32 weights of torch's 1-D bicubic resize (F.interpolate mode="bicubic",
  align_corners=False, antialias=False): Keys' cubic with a = -0.75 and border-clamped taps.

  jax.image.resize("cubic") is a different kernel (a = -0.5, and it antialiases when
  downsampling), so HF's position-embedding interpolation needs its own. Follows torch's
  UpSampleKernel.cpp: source index scale * (dst + 0.5) - 0.5 with scale = in / out (no clamp at
  0 for cubic), then guard_index_and_lambda, then taps at index - 1 .. index + 2 clamped to the
  border (so border weights accumulate).
  """
  a = -0.75
  scale = in_size / out_size
  m = np.zeros((out_size, in_size), np.float64)
  for dst in range(out_size):
    real = scale * (dst + 0.5) - 0.5
    index = min(math.floor(real), in_size - 1)
    t = min(max(real - index, 0.0), 1.0)

    def near(x):  # |x| <= 1
      return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
      return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    for k, w in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
      m[dst, min(max(index - 1 + k, 0), in_size - 1)] += w
  return m.astype(np.float32)


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[h, w, D] -> [size[0], size[1], D], as torch's bicubic on the NCHW view of x."""
  mh = jnp.asarray(bicubic_matrix(x.shape[0], size[0]))
  mw = jnp.asarray(bicubic_matrix(x.shape[1], size[1]))
  # HIGHEST: a TPU/GPU default-precision (bf16 pass) einsum would be far off torch's f32 sums.
  return jnp.einsum("ih,jw,hwd->ijd", mh, mw, x.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


# ------------------------------------------------------------------------------ modules


def _norm(x, eps, name, dtype):
  """LayerNorm in float32 (bf16 statistics are too coarse), two-pass variance as torch."""
  y = nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32,
                   use_fast_variance=False, name=name)(x.astype(jnp.float32))
  return y.astype(dtype)


class Attention(nn.Module):
  """Multi-head self-attention; q, k, v are one fused projection "qkv" (one matmul, not three)."""

  num_heads: int
  qkv_bias: bool = True
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    b, t, d = x.shape
    hd = d // self.num_heads
    qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, dtype=self.dtype, param_dtype=jnp.float32,
                   name="qkv")(x)
    q, k, v = (y.reshape(b, t, self.num_heads, hd) for y in jnp.split(qkv, 3, axis=-1))
    if train and self.dropout > 0:  # dropout on the probabilities: the explicit form
      # Logits and softmax in float32 (HF's softmax also runs in float32), for bf16 stability.
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                          preferred_element_type=jnp.float32) * hd**-0.5
      probs = nn.Dropout(self.dropout, deterministic=False)(jax.nn.softmax(logits, axis=-1))
      out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
    else:
      # JAX's fused attention (softmax in float32; cuDNN flash attention on GPU in bf16):
      # 2.7x faster than the einsum form on CPU at ViT-B's 197 tokens.
      out = jax.nn.dot_product_attention(q, k, v)
    out = out.reshape(b, t, d)
    return nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="out")(out)


class Block(nn.Module):
  """Pre-norm transformer layer: ViTLayer / Dinov2Layer / CLIPEncoderLayer."""

  num_heads: int
  mlp_dim: int
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  qkv_bias: bool = True
  layer_scale: bool = False  # DINOv2: per-channel scales on both residual branches
  swiglu: bool = False  # DINOv2 giant: silu(x W1) * (x W2) instead of fc1-act-fc2
  attention_dropout: float = 0.0  # on the attention probabilities
  attention_out_dropout: float = 0.0  # after the attention output projection
  mlp_out_dropout: float = 0.0  # after the MLP (ViT only; DINOv2's MLP has none)
  drop_path: float = 0.0  # stochastic depth (DINOv2)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dt, d = self.dtype, x.shape[-1]

    def residual(x, y, name):
      if self.layer_scale:
        y = y * self.param(name, nn.initializers.ones, (d,), jnp.float32).astype(dt)
      if train and self.drop_path > 0:  # one keep/drop draw per sample, as HF drop_path
        keep = 1.0 - self.drop_path
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1))
        y = jnp.where(mask, y / keep, 0).astype(dt)
      return x + y

    y = _norm(x, self.layer_norm_eps, "norm1", dt)
    y = Attention(num_heads=self.num_heads, qkv_bias=self.qkv_bias,
                  dropout=self.attention_dropout, dtype=dt, name="attn")(y, train)
    if train and self.attention_out_dropout > 0:
      y = nn.Dropout(self.attention_out_dropout, deterministic=False)(y)
    x = residual(x, y, "layer_scale1")
    y = _norm(x, self.layer_norm_eps, "norm2", dt)
    if self.swiglu:
      y = nn.Dense(2 * self.mlp_dim, dtype=dt, param_dtype=jnp.float32, name="weights_in")(y)
      y1, y2 = jnp.split(y, 2, axis=-1)
      y = nn.Dense(d, dtype=dt, param_dtype=jnp.float32, name="weights_out")(nn.silu(y1) * y2)
    else:
      y = nn.Dense(self.mlp_dim, dtype=dt, param_dtype=jnp.float32, name="fc1")(y)
      y = activation(self.hidden_act)(y)
      y = nn.Dense(d, dtype=dt, param_dtype=jnp.float32, name="fc2")(y)
    if train and self.mlp_out_dropout > 0:
      y = nn.Dropout(self.mlp_out_dropout, deterministic=False)(y)
    return residual(x, y, "layer_scale2")


class VisionTransformer(nn.Module):
  """ViT / DINOv2 / CLIP image encoder with the family's outputs (see the module docstring)."""

  family: str  # "vit" | "dinov2" | "clip"
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  grid: tuple[int, int]  # the position embeddings' patch grid (config image_size // patch)
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  qkv_bias: bool = True
  layer_scale: bool = False
  swiglu: bool = False
  pooler_dim: int | None = None  # ViT's dense + pooler_act pooler, when its weights exist
  pooler_act: str = "tanh"
  features_from: str = "cls"  # "cls" | "cls_mean" (DINOv2 head) | "patch_mean" (CLIP head)
  projection_dim: int | None = None  # CLIP's visual_projection, when its weight exists
  num_classes: int | None = None  # None: no classification head
  new_head: bool = False  # the head is not the checkpoint's (the loader zero-fills it)
  embed_dropout: float = 0.0
  attention_dropout: float = 0.0
  attention_out_dropout: float = 0.0
  mlp_out_dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  def position_embeddings(self, pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """[1 + N, D] at the checkpoint's grid -> at `grid` (HF interpolate_pos_encoding)."""
    if tuple(grid) == tuple(self.grid):  # HF returns them untouched (a same-size bicubic is too)
      return pos
    patches = pos[1:].reshape(*self.grid, pos.shape[-1])
    patches = resize_bicubic(patches, grid).reshape(-1, pos.shape[-1])
    return jnp.concatenate([pos[:1], patches], axis=0)

  @nn.compact
  def __call__(self, x, train: bool = False):
    dt, d = self.dtype, self.hidden_size
    x = nn.Conv(d, (self.patch_size,) * 2, (self.patch_size,) * 2, padding="VALID",
                use_bias=self.family != "clip", dtype=dt, param_dtype=jnp.float32,
                name="patch_embed")(x.astype(dt))
    b, h, w, _ = x.shape  # the conv floors H / patch and W / patch, as torch's does
    cls = self.param("cls_token", nn.initializers.zeros, (d,), jnp.float32)
    pos = self.param("pos_embed", nn.initializers.zeros, (1 + self.grid[0] * self.grid[1], d),
                     jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dt), (b, 1, d)), x.reshape(b, h * w, d)], 1)
    x = x + self.position_embeddings(pos, (h, w)).astype(dt)
    if train and self.embed_dropout > 0:
      x = nn.Dropout(self.embed_dropout, deterministic=False)(x)
    if self.family == "clip":
      x = _norm(x, self.layer_norm_eps, "pre_norm", dt)
    for i in range(self.num_layers):
      x = Block(num_heads=self.num_heads, mlp_dim=self.mlp_dim, hidden_act=self.hidden_act,
                layer_norm_eps=self.layer_norm_eps, qkv_bias=self.qkv_bias,
                layer_scale=self.layer_scale, swiglu=self.swiglu,
                attention_dropout=self.attention_dropout,
                attention_out_dropout=self.attention_out_dropout,
                mlp_out_dropout=self.mlp_out_dropout, drop_path=self.drop_path, dtype=dt,
                name=f"layers_{i}")(x, train)

    f32 = jnp.float32
    if self.family == "clip":  # HF: last_hidden_state is the raw encoder output; norm on CLS only
      out = {"last_hidden_state": x.astype(f32),
             "pooler_output": _norm(x[:, 0], self.layer_norm_eps, "norm", f32)}
    else:
      x = _norm(x, self.layer_norm_eps, "norm", dt)
      out = {"last_hidden_state": x.astype(f32)}
      if self.family == "dinov2":
        out["pooler_output"] = x[:, 0].astype(f32)
      elif self.pooler_dim is not None:
        pooled = nn.Dense(self.pooler_dim, dtype=dt, param_dtype=f32, name="pooler")(x[:, 0])
        out["pooler_output"] = activation(self.pooler_act)(pooled).astype(f32)
    seq = out["last_hidden_state"]
    # Patch means in float32: a bf16 sum over hundreds of tokens would lose precision.
    if self.features_from == "cls_mean":
      features = jnp.concatenate([seq[:, 0], seq[:, 1:].mean(1)], axis=-1)
    elif self.features_from == "patch_mean":
      features = seq[:, 1:].mean(1)
    elif self.family == "vit":  # the pooler (if any) is not what ViT's classifier reads
      features = seq[:, 0]
    else:
      features = out["pooler_output"]
    out["features"] = features
    if self.projection_dim is not None:
      out["image_embeds"] = nn.Dense(self.projection_dim, use_bias=False, dtype=dt,
                                     param_dtype=f32, name="visual_projection")(
                                         out["pooler_output"]).astype(f32)
    if self.num_classes is not None:
      out["logits"] = nn.Dense(self.num_classes, dtype=dt, param_dtype=f32, name="classifier")(
          features).astype(f32)
    return out
