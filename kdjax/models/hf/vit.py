"""Vision transformer teachers: Flax linen ports of Hugging Face transformers' (4.57.6) ViT
(Dosovitskiy et al., arXiv 2010.11929), DINOv2 (Oquab et al., arXiv 2304.07193) and the CLIP
image tower (Radford et al., arXiv 2103.00020), with converters from their safetensors
checkpoints (e.g. google/vit-base-patch16-224, facebook/dinov2-base, openai/clip-vit-base-patch32).
This module is the family (the contract in common.py): `build` reads the config.json, `convert`
maps the checkpoint's tensors onto the Flax parameters, `hf_layout` gives the exported
ViTForImageClassification's tensors; the Flax modules are vit_encoder.py's.

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
other than the config's), with torch's bicubic reproduced exactly (`vit_encoder.bicubic_matrix`).
"""

from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np

from kdjax import errors
from kdjax.models.hf.common import Tensors, conv_kernel, dense, layer_norm, num_labels
from kdjax.models.hf.vit_encoder import VisionTransformer

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
