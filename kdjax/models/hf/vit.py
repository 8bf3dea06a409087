"""Vision transformer teachers: Flax linen ports of Hugging Face transformers' (4.57.6) ViT
(Dosovitskiy et al., arXiv 2010.11929), DINOv2 (Oquab et al., arXiv 2304.07193) and the CLIP
image tower (Radford et al., arXiv 2103.00020), with converters from their safetensors
checkpoints (e.g. google/vit-base-patch16-224, facebook/dinov2-base, openai/clip-vit-base-patch32).

One encoder serves all three; the families differ only in options:
  ViT     `ViTModel` (+ optional tanh pooler), `ViTForImageClassification` (head on CLS).
  DINOv2  `Dinov2Model`, `Dinov2ForImageClassification` (head on [CLS, mean of patches]);
          layer scale, SwiGLU FFN (giant), drop path; the mask token is never used.
  CLIP    `CLIPVisionModel`, `CLIPVisionModelWithProjection`, the image half of `CLIPModel`
          (the text tower is skipped) and `CLIPForImageClassification` (head on mean of patches):
          pre-norm (`pre_layrnorm`), no conv bias, a post-norm on CLS only.
Outputs carry HF's names: last_hidden_state [B, 1 + N, D] (after the final norm for ViT and
DINOv2, before it for CLIP, as HF), pooler_output [B, D], image_embeds (CLIP projection), logits,
and `features`, the vector the family's classification head reads.

Inputs of any size work: the position embeddings are resized as HF's `interpolate_pos_encoding`
does (always on in DINOv2; ViT and CLIP need `interpolate_pos_encoding=True` in torch for a size
other than the config's), with torch's bicubic reproduced exactly (`bicubic_matrix`).
"""

import math
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import errors
from kdjax.models.hf.common import (
  Tensors,
  activation,
  conv_kernel,
  dense,
  layer_norm,
  num_labels,
)

MODEL_TYPES = ("vit", "dinov2", "clip", "clip_vision_model")
# The base model's names sit under these when a head model (or CLIPModel) saved them.
PREFIXES = ("vit.", "dinov2.", "vision_model.")

# HF config defaults of the fields read here (configuration_{vit,dinov2,clip}.py, 4.57.6): a
# config.json may leave them out (a nested CLIP vision_config holds only non-default values).
DEFAULTS = {
    "vit": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, image_size=224,
                patch_size=16, qkv_bias=True, pooler_output_size=None, pooler_act="tanh"),
    "dinov2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                   hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                   layer_norm_eps=1e-6, image_size=224, patch_size=14, qkv_bias=True,
                   drop_path_rate=0.0, use_swiglu_ffn=False),
    "clip": dict(hidden_size=768, intermediate_size=3072, projection_dim=512,
                 num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0),
}

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


# ------------------------------------------------------------------------------ build / convert


def _has(keys: Iterable[str], name: str) -> bool:
  return any(p + name in keys for p in ("", *PREFIXES))


def _pair(v) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, int | float) else (int(v[0]), int(v[1]))


def family_config(config: dict) -> tuple[str, dict]:
  """(family, the vision config with HF's defaults filled in) of a config.json."""
  model_type = config.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type {model_type!r} is not one of {MODEL_TYPES}")
  if model_type == "clip":
    # CLIPModel's projection size and CLIPForImageClassification's labels are top-level, not in
    # vision_config. Old configs keep vision settings in vision_config_dict, which HF lets override.
    vision = {**(config.get("vision_config") or {}), **(config.get("vision_config_dict") or {})}
    top = {k: config[k] for k in ("id2label", "num_labels", "architectures") if k in config}
    return "clip", {**DEFAULTS["clip"], **vision, **top,
                    "projection_dim": config.get("projection_dim", 512)}
  family = "clip" if model_type == "clip_vision_model" else model_type
  return family, {**DEFAULTS[family], **config}


def build(config: dict, keys, *, dtype=jnp.float32, num_classes: int | None = None):
  family, c = family_config(config)
  keys = frozenset(keys)
  architectures = c.get("architectures") or []
  d, patch = c["hidden_size"], _pair(c["patch_size"])
  if patch[0] != patch[1]:
    raise errors.UserError(f"the checkpoint's non-square patches {patch} (config.json) are not "
                           "supported by kdjax's ViT port")
  grid = tuple(s // patch[0] for s in _pair(c["image_size"]))
  new_head = num_classes is not None
  if num_classes is None and _has(keys, "classifier.weight"):
    num_classes = num_labels(c)
  common = dict(family=family, hidden_size=d, num_layers=c["num_hidden_layers"],
                num_heads=c["num_attention_heads"], patch_size=patch[0], grid=grid,
                hidden_act=c["hidden_act"], layer_norm_eps=c["layer_norm_eps"],
                num_classes=num_classes, new_head=new_head, dtype=dtype)
  if family == "vit":
    return VisionTransformer(
        **common, mlp_dim=c["intermediate_size"], qkv_bias=c["qkv_bias"],
        pooler_dim=((c["pooler_output_size"] or d) if _has(keys, "pooler.dense.weight") else None),
        pooler_act=c["pooler_act"], embed_dropout=c["hidden_dropout_prob"],
        attention_dropout=c["attention_probs_dropout_prob"],
        attention_out_dropout=c["hidden_dropout_prob"], mlp_out_dropout=c["hidden_dropout_prob"])
  if family == "dinov2":
    mlp_dim = int(d * c["mlp_ratio"])
    if c["use_swiglu_ffn"]:  # HF Dinov2SwiGLUFFN's hidden size
      mlp_dim = (int(mlp_dim * 2 / 3) + 7) // 8 * 8
    # A Dinov2ForImageClassification checkpoint (names under "dinov2.") reads [CLS, patch mean],
    # also when the loader hid its head to put a new one in its place.
    head_model = (any(k.startswith("dinov2.") for k in keys)
                  or "Dinov2ForImageClassification" in architectures)
    return VisionTransformer(
        **common, mlp_dim=mlp_dim, qkv_bias=c["qkv_bias"], layer_scale=True,
        swiglu=c["use_swiglu_ffn"], features_from="cls_mean" if head_model else "cls",
        embed_dropout=c["hidden_dropout_prob"],
        attention_dropout=c["attention_probs_dropout_prob"],
        attention_out_dropout=c["hidden_dropout_prob"], drop_path=c["drop_path_rate"])
  head_model = (_has(keys, "classifier.weight")
                or "CLIPForImageClassification" in architectures)
  return VisionTransformer(
      **common, mlp_dim=c["intermediate_size"],
      features_from="patch_mean" if head_model else "cls",
      projection_dim=c["projection_dim"] if _has(keys, "visual_projection.weight") else None,
      attention_dropout=c["attention_dropout"])


def convert(tensors: Tensors, module: VisionTransformer) -> dict:
  clip = module.family == "clip"
  if clip:  # a full CLIPModel checkpoint: the text tower and the contrastive scale are not used
    for name in ("text_model.", "text_projection.", "logit_scale", "embeddings.position_ids"):
      tensors.skip(name)
    emb = {"patch": "embeddings.patch_embedding", "cls": "embeddings.class_embedding",
           "pos": "embeddings.position_embedding.weight"}
  else:
    tensors.skip("embeddings.mask_token")  # masked-image pre-training only
    emb = {"patch": "embeddings.patch_embeddings.projection", "cls": "embeddings.cls_token",
           "pos": "embeddings.position_embeddings"}
  d = module.hidden_size
  patch = {"kernel": conv_kernel(tensors.take(emb["patch"] + ".weight"))}
  if not clip:
    patch["bias"] = tensors.take(emb["patch"] + ".bias")
  params = {"patch_embed": patch, "cls_token": tensors.take(emb["cls"]).reshape(d),
            "pos_embed": tensors.take(emb["pos"]).reshape(-1, d)}
  if clip:
    params["pre_norm"] = layer_norm(tensors, "pre_layrnorm")

  def qkv(q, k, v, bias):
    out = {"kernel": np.concatenate([dense(tensors, n, bias)["kernel"] for n in (q, k, v)], 1)}
    if bias:
      out["bias"] = np.concatenate([tensors.take(n + ".bias") for n in (q, k, v)])
    return out

  for i in range(module.num_layers):
    if clip:
      p = f"encoder.layers.{i}."
      layer = {"norm1": layer_norm(tensors, p + "layer_norm1"),
               "attn": {"qkv": qkv(*(p + f"self_attn.{n}_proj" for n in "qkv"), True),
                        "out": dense(tensors, p + "self_attn.out_proj")},
               "norm2": layer_norm(tensors, p + "layer_norm2"),
               "fc1": dense(tensors, p + "mlp.fc1"), "fc2": dense(tensors, p + "mlp.fc2")}
    else:
      p = f"encoder.layer.{i}."
      a = p + "attention."
      layer = {"attn": {"qkv": qkv(*(a + f"attention.{n}" for n in ("query", "key", "value")),
                                   module.qkv_bias),
                        "out": dense(tensors, a + "output.dense")}}
      if module.family == "vit":
        layer.update(norm1=layer_norm(tensors, p + "layernorm_before"),
                     norm2=layer_norm(tensors, p + "layernorm_after"),
                     fc1=dense(tensors, p + "intermediate.dense"),
                     fc2=dense(tensors, p + "output.dense"))
      else:
        layer.update(norm1=layer_norm(tensors, p + "norm1"), norm2=layer_norm(tensors, p + "norm2"),
                     layer_scale1=tensors.take(p + "layer_scale1.lambda1"),
                     layer_scale2=tensors.take(p + "layer_scale2.lambda1"))
        names = ("weights_in", "weights_out") if module.swiglu else ("fc1", "fc2")
        layer.update({n: dense(tensors, p + "mlp." + n) for n in names})
    params[f"layers_{i}"] = layer

  params["norm"] = layer_norm(tensors, "post_layernorm" if clip else "layernorm")
  if module.pooler_dim is not None:
    params["pooler"] = dense(tensors, "pooler.dense")
  if module.projection_dim is not None:
    params["visual_projection"] = dense(tensors, "visual_projection", bias=False)
  if module.num_classes is not None and not module.new_head:
    params["classifier"] = dense(tensors, "classifier")
  else:  # a new head is zero-filled by the loader; the checkpoint's (if any) is not used
    tensors.skip("classifier")
  return {"params": params}


# ------------------------------------------------------------------------------ export layout

HF_CLASSIFIER = "ViTForImageClassification"  # the one family of this module exported


def hf_layout(config: dict, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """name -> (shape, dtype) of every tensor of transformers' ViTForImageClassification (no
  pooler, as HF builds it) with `num_classes` labels for `config` (tested equal to
  transformers' state dict): what kdjax.export writes, through `convert` run backwards."""
  family, c = family_config(config)
  if family != "vit":
    raise errors.UserError(f"exporting a {family!r} model is not supported yet; exportable "
                           "Hub architectures: ResNet and ViT")
  d, mlp, p = c["hidden_size"], c["intermediate_size"], _pair(c["patch_size"])
  tokens = 1 + (_pair(c["image_size"])[0] // p[0]) * (_pair(c["image_size"])[1] // p[1])
  f = "float32"
  out = {"vit.embeddings.cls_token": ((1, 1, d), f),
         "vit.embeddings.position_embeddings": ((1, tokens, d), f),
         "vit.embeddings.patch_embeddings.projection.weight": ((d, c.get("num_channels", 3),
                                                                *p), f),
         "vit.embeddings.patch_embeddings.projection.bias": ((d,), f)}

  def dense(name, n_out, n_in, bias=True):
    out[name + ".weight"] = ((n_out, n_in), f)
    if bias:
      out[name + ".bias"] = ((n_out,), f)

  for i in range(c["num_hidden_layers"]):
    p_ = f"vit.encoder.layer.{i}."
    for n in ("query", "key", "value"):
      dense(p_ + "attention.attention." + n, d, d, c["qkv_bias"])
    dense(p_ + "attention.output.dense", d, d)
    dense(p_ + "intermediate.dense", mlp, d)
    dense(p_ + "output.dense", d, mlp)
    for n in ("layernorm_before", "layernorm_after"):
      out[p_ + n + ".weight"] = out[p_ + n + ".bias"] = ((d,), f)
  out["vit.layernorm.weight"] = out["vit.layernorm.bias"] = ((d,), f)
  dense("classifier", num_classes, d)
  return out
