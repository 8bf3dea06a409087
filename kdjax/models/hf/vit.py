"""Vision transformer teachers: Flax linen ports of Hugging Face transformers' (4.57.6) ViT
(Dosovitskiy et al., arXiv 2010.11929), DINOv2 (Oquab et al., arXiv 2304.07193) and the CLIP
image tower (Radford et al., arXiv 2103.00020), with converters from their safetensors
checkpoints (e.g. google/vit-base-patch16-224, facebook/dinov2-base, openai/clip-vit-base-patch32).
This module is the family (the contract in common.py): `build` reads the config.json, `convert`
maps the checkpoint's tensors onto the Flax parameters, `hf_export` and `hf_layout` give a run's
export as the family's <X>ForImageClassification; the Flax modules are vit_encoder.py's.

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
from kdjax.models.hf.common import (
  OTHER_FORMATS,
  Tensors,
  conv_kernel,
  dense,
  layer_norm,
  num_labels,
)
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


# ------------------------------------------------------------------------------ export

HF_CLASSIFIER = "ViTForImageClassification"  # model_type "vit"
HF_CLASSIFIERS = {"vit": HF_CLASSIFIER, "dinov2": "Dinov2ForImageClassification",
                  "clip": "CLIPForImageClassification"}
# A clip_vision_model config.json's keys that belong to the CLIPConfig around it, not to its
# vision_config (the head's labels, the architecture, the file's own bookkeeping).
_TOP_LEVEL = ("architectures", "id2label", "label2id", "num_labels", "torch_dtype", "dtype",
              "transformers_version", "_name_or_path", "model_type")


def _run_backbone(config: dict, params: dict) -> VisionTransformer:
  """The run's backbone module, as `build` made it from the checkpoint's names: its optional
  parts exist exactly when their parameters do (DINOv2's [CLS, patch mean] features come from
  the head's input size)."""
  family, c = family_config(config)
  keys = {"pooler.dense.weight"} if "pooler" in params else set()
  if "visual_projection" in params:
    keys.add("visual_projection.weight")
  if family == "dinov2" and params["classifier"]["kernel"].shape[0] == 2 * c["hidden_size"]:
    keys.add("dinov2.layernorm.weight")  # a Dinov2ForImageClassification backbone
  return build(config, frozenset(keys))


def _clip_config(config: dict) -> dict:
  """A CLIPConfig config.json (CLIPForImageClassification takes one) of a CLIP config.json."""
  if config.get("model_type") == "clip":
    return dict(config)
  vision = {k: v for k, v in config.items() if k not in _TOP_LEVEL}
  top = {k: v for k, v in config.items() if k in _TOP_LEVEL and k != "model_type"}
  return {**top, "model_type": "clip", "vision_config": vision}


def hf_export(config: dict, variables: dict) -> tuple[dict, str, dict]:
  """(config.json, architecture, variables) of the run's backbone + head as transformers'
  <X>ForImageClassification, giving the run's logits exactly (see common.py):
  - ViT: ViTForImageClassification reads CLS, as the run; a pooler (ViTModel) is dropped.
  - DINOv2: Dinov2ForImageClassification reads [CLS, patch mean]; a run on CLS alone (a
    Dinov2Model backbone) gets zero weights for the mean.
  - CLIP: CLIPForImageClassification (a CLIPConfig) reads the patch-token mean, which only a
    CLIPForImageClassification backbone's run reads; any other CLIP run (its head on the
    normalised CLS, `pooler_output`) is refused, naming the formats that export it."""
  family, c = family_config(config)
  params = dict(variables["params"])
  backbone = _run_backbone(config, params)
  d = c["hidden_size"]
  rows = int(params["classifier"]["kernel"].shape[0])
  want = 2 * d if backbone.features_from == "cls_mean" else d
  if rows != want:
    raise errors.UserError(f"export: the run's head reads {rows} features, its {family} "
                           f"backbone gives {want}")
  params.pop("pooler", None)  # not what the head reads; transformers' head model has none
  params.pop("visual_projection", None)
  if family == "dinov2" and backbone.features_from == "cls":
    head = params["classifier"]
    kernel = np.asarray(head["kernel"], np.float32)
    params["classifier"] = {**head, "kernel": np.concatenate([kernel, np.zeros_like(kernel)])}
  if family == "clip" and backbone.features_from != "patch_mean":
    raise errors.UserError(
        "this CLIP run's head reads the normalised CLS token (pooler_output, as CLIPVisionModel "
        "and CLIPModel give it), but transformers' only CLIP classifier, "
        "CLIPForImageClassification, reads the mean of the patch tokens before that norm: no "
        "Hugging Face checkpoint gives this run's logits, so --format=hf cannot write it; "
        f"export it with {OTHER_FORMATS}")
  architecture = HF_CLASSIFIERS[family]
  out = _clip_config(config) if family == "clip" else dict(config)
  out["architectures"] = [architecture]  # build() reads the head model's features from it
  return out, architecture, {**variables, "params": params}


def hf_layout(config: dict, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """name -> (shape, dtype) of every tensor of transformers' <X>ForImageClassification
  (HF_CLASSIFIERS; ViT without pooler, as HF builds it) with `num_classes` labels for `config`
  (tested equal to transformers' state dict): what kdjax.export writes, through `convert` run
  backwards (DINOv2's mask token, unused by the classifier, as zeros)."""
  family, c = family_config(config)
  d, p = c["hidden_size"], _pair(c["patch_size"])
  grid = [s // q for s, q in zip(_pair(c["image_size"]), p)]
  tokens = 1 + grid[0] * grid[1]
  channels = c.get("num_channels", 3)
  f = "float32"
  out = {}

  def dense(name, n_out, n_in, bias=True):
    out[name + ".weight"] = ((n_out, n_in), f)
    if bias:
      out[name + ".bias"] = ((n_out,), f)

  def norm(name):
    out[name + ".weight"] = out[name + ".bias"] = ((d,), f)

  if family == "clip":
    pre = "vision_model."
    out.update({pre + "embeddings.class_embedding": ((d,), f),
                pre + "embeddings.patch_embedding.weight": ((d, channels, *p), f),
                pre + "embeddings.position_embedding.weight": ((tokens, d), f)})
    norm(pre + "pre_layrnorm")
    for i in range(c["num_hidden_layers"]):
      p_ = f"{pre}encoder.layers.{i}."
      for n in ("k", "v", "q", "out"):
        dense(f"{p_}self_attn.{n}_proj", d, d)
      norm(p_ + "layer_norm1")
      dense(p_ + "mlp.fc1", c["intermediate_size"], d)
      dense(p_ + "mlp.fc2", d, c["intermediate_size"])
      norm(p_ + "layer_norm2")
    norm(pre + "post_layernorm")
    dense("classifier", num_classes, d)
    return out

  pre = f"{family}."
  out.update({pre + "embeddings.cls_token": ((1, 1, d), f)})
  if family == "dinov2":
    out[pre + "embeddings.mask_token"] = ((1, d), f)
  out.update({pre + "embeddings.position_embeddings": ((1, tokens, d), f),
              pre + "embeddings.patch_embeddings.projection.weight": ((d, channels, *p), f),
              pre + "embeddings.patch_embeddings.projection.bias": ((d,), f)})
  for i in range(c["num_hidden_layers"]):
    p_ = f"{pre}encoder.layer.{i}."
    for n in ("query", "key", "value"):
      dense(p_ + "attention.attention." + n, d, d, c["qkv_bias"])
    dense(p_ + "attention.output.dense", d, d)
    if family == "vit":
      norm(p_ + "layernorm_before")
      dense(p_ + "intermediate.dense", c["intermediate_size"], d)
      dense(p_ + "output.dense", d, c["intermediate_size"])
      norm(p_ + "layernorm_after")
      continue
    norm(p_ + "norm1")
    out[p_ + "layer_scale1.lambda1"] = ((d,), f)
    norm(p_ + "norm2")
    mlp = int(d * c["mlp_ratio"])
    if c["use_swiglu_ffn"]:
      mlp = (int(mlp * 2 / 3) + 7) // 8 * 8
      dense(p_ + "mlp.weights_in", 2 * mlp, d)
      dense(p_ + "mlp.weights_out", d, mlp)
    else:
      dense(p_ + "mlp.fc1", mlp, d)
      dense(p_ + "mlp.fc2", d, mlp)
    out[p_ + "layer_scale2.lambda1"] = ((d,), f)
  norm(pre + "layernorm")
  dense("classifier", num_classes, 2 * d if family == "dinov2" else d)
  return out
