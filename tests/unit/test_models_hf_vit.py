"""ViT / DINOv2 / CLIP teachers (kdjax/models/hf/vit.py): parity with HF PyTorch.

Every model is a tiny random HF model built and `save_pretrained` (safetensors) by the test, with
all weights re-drawn so nothing is an identity (layer norms, biases, layer scales) and attention
is far from uniform; torch 2.13 on CPU (fp32) is the oracle. Nothing is downloaded.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from kdjax.models.hf import vit, vit_encoder
from kdjax.models.hf.common import Tensors

TOL = 1e-4  # fp32 parity bound of the task
# bf16: max |jax bf16 - torch fp32| <= BF16_TOL * max |torch fp32|, per output. bf16 keeps 8
# significant bits (rounding error up to 2^-9 = 0.2% per op); these models are ~10 rounded matmuls
# deep with the errors adding up along the residual stream, so about 1% of the output's scale is
# what a correct port gives: measured 0.3-2.0% over all nine models (the most: ViT's tanh pooler).
# 5% leaves room for other inputs and seeds; a wrong weight or layout is off by O(100%).
BF16_TOL = 0.05

# LLVM at -O0: compiles ~3x faster (the file's time is mostly ~30 compiles of tiny graphs), same
# XLA graph passes. test_teachers_load runs the loader's own default-options jit.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

D, LAYERS, HEADS, PATCH, IMAGE = 32, 2, 4, 4, 16
NATIVE = [(1, 3, IMAGE, IMAGE), (3, 3, IMAGE, IMAGE)]  # NCHW, as torch
WIDE = (2, 3, 16, 24)  # non-square, grid 4x6: position embeddings upsampled along W
ODD = (2, 3, 26, 13)  # grid 6x3 with remainders the patch conv drops: up in H, down in W


def _randomise(model):
  """Re-draws every weight: HF's init zeroes biases and sets norms/layer scales to identity, and
  its small init makes attention nearly uniform, all of which would hide conversion mistakes."""
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      r = torch.randn(p.shape, generator=gen)
      if name.endswith("lambda1"):  # DINOv2 layer scale
        p.copy_(0.5 + r.abs())
      elif name.endswith("weight") and p.ndim == 1:  # LayerNorm
        p.copy_(1 + 0.2 * r)
      elif name.endswith("bias"):
        p.copy_(0.1 * r)
      elif name.endswith("weight"):  # Linear, Conv2d, Embedding: O(1) activations
        p.copy_(r / np.sqrt(p[0].numel()))
      else:  # cls tokens, position embeddings, mask token, logit scale
        p.copy_(0.5 * r)
  return model.eval()


def _vit_config(**kw):
  return transformers.ViTConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                intermediate_size=48, image_size=IMAGE, patch_size=PATCH, **kw)


def _dinov2_config(**kw):
  return transformers.Dinov2Config(hidden_size=D, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, mlp_ratio=2, image_size=IMAGE,
                                   patch_size=PATCH, **kw)


def _clip_vision_config(**kw):
  return transformers.CLIPVisionConfig(hidden_size=D, intermediate_size=48,
                                       num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                       image_size=IMAGE, patch_size=PATCH, **kw)


def _clip_config():
  text = transformers.CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=24,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     max_position_embeddings=8, projection_dim=12)
  return transformers.CLIPConfig(text_config=text.to_dict(),
                                 vision_config=_clip_vision_config().to_dict(), projection_dim=12)


def _first(x):
  return x[:, 0]


def _ref_vit(model, px):
  o = model(px, interpolate_pos_encoding=True)
  return {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output,
          "features": _first(o.last_hidden_state)}


def _ref_vit_cls(model, px):
  lhs = model.vit(px, interpolate_pos_encoding=True).last_hidden_state
  return {"last_hidden_state": lhs, "features": _first(lhs),
          "logits": model(px, interpolate_pos_encoding=True).logits}


def _ref_dinov2(model, px):
  o = model(px)
  return {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output,
          "features": o.pooler_output}


def _ref_dinov2_cls(model, px):
  o = model.dinov2(px)
  lhs = o.last_hidden_state
  return {"last_hidden_state": lhs, "pooler_output": o.pooler_output,
          "features": torch.cat([lhs[:, 0], lhs[:, 1:].mean(1)], 1), "logits": model(px).logits}


def _ref_clip_vision(model, px):
  o = model.vision_model(px, interpolate_pos_encoding=True)
  out = {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output,
         "features": o.pooler_output}
  if isinstance(model, transformers.CLIPVisionModelWithProjection):
    out["image_embeds"] = model(px, interpolate_pos_encoding=True).image_embeds
  if isinstance(model, transformers.CLIPModel):
    out["image_embeds"] = model.get_image_features(px, interpolate_pos_encoding=True)
  return out


def _ref_clip_cls(model, px):
  o = model.vision_model(px)
  return {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output,
          "features": o.last_hidden_state[:, 1:].mean(1), "logits": model(px).logits}


# name: (HF model, torch reference outputs, input shapes)
CASES = {
    "vit_model_pooler": (lambda: transformers.ViTModel(_vit_config()), _ref_vit,
                         [*NATIVE, WIDE]),
    # qkv_bias=False and a tanh GELU: the options the Hub ViTs vary
    "vit_classification": (
        lambda: transformers.ViTForImageClassification(
            _vit_config(num_labels=5, qkv_bias=False, hidden_act="gelu_new")),
        _ref_vit_cls, [*NATIVE, WIDE]),
    "dinov2_model": (lambda: transformers.Dinov2Model(_dinov2_config()), _ref_dinov2,
                     [*NATIVE, ODD]),
    "dinov2_swiglu": (lambda: transformers.Dinov2Model(_dinov2_config(use_swiglu_ffn=True)),
                      _ref_dinov2, [*NATIVE, ODD]),
    "dinov2_classification": (
        lambda: transformers.Dinov2ForImageClassification(_dinov2_config(num_labels=5)),
        _ref_dinov2_cls, [*NATIVE, ODD]),
    "clip_vision": (lambda: transformers.CLIPVisionModel(_clip_vision_config()),
                    _ref_clip_vision, [*NATIVE, WIDE]),
    "clip_vision_projection": (
        lambda: transformers.CLIPVisionModelWithProjection(_clip_vision_config(projection_dim=12)),
        _ref_clip_vision, [*NATIVE, WIDE]),
    "clip_full": (lambda: transformers.CLIPModel(_clip_config()), _ref_clip_vision,
                  [*NATIVE, WIDE]),
    # its torch forward has no interpolate_pos_encoding: native sizes only
    "clip_classification": (
        lambda: transformers.CLIPForImageClassification(
            transformers.CLIPConfig(vision_config=_clip_vision_config().to_dict(), num_labels=5)),
        _ref_clip_cls, NATIVE),
}


def load_dir(path, dtype=jnp.float32, num_classes=None):
  """config.json + model.safetensors -> (module, variables), as kdjax.hf.pretrained.load does it,
  checking that every tensor is used and the variables match the module's exactly."""
  with open(path / "config.json") as f:
    config = json.load(f)
  arrays = safetensors.numpy.load_file(str(path / "model.safetensors"))
  module = vit.build(config, frozenset(arrays), dtype=dtype, num_classes=num_classes)
  tensors = Tensors(arrays, vit.PREFIXES)
  variables = vit.convert(tensors, module)
  assert tensors.unused() == []
  abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
  want = {k: v.shape for k, v in _flat(abstract).items()}
  have = {k: v.shape for k, v in _flat(variables).items()}
  if num_classes is not None:  # the new head: zero-filled, as the loader does
    new = {k: s for k, s in want.items() if k.startswith("params/classifier/")}
    assert new and not set(new) & set(have)
    have.update(new)
    variables = jax.tree_util.tree_map(np.asarray, variables)
    variables["params"]["classifier"] = {k.split("/")[-1]: np.zeros(s, np.float32)
                                         for k, s in new.items()}
  assert have == want
  return module, variables


def _flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _inputs(shape):
  return np.random.RandomState(sum(shape)).randn(*shape).astype(np.float32)


def _reference(case, shape):
  """torch fp32 outputs of the case's model on the (cached) input of `shape`."""
  key = ("ref", shape)
  if key not in case:
    with torch.no_grad():
      case[key] = {k: v.numpy() for k, v in case["ref"](case["model"],
                                                          torch.from_numpy(_inputs(shape))).items()}
  return case[key]


@pytest.fixture(scope="module", autouse=True)
def _torch_one_thread():
  """These models are tiny: torch's second thread only spin-waits (on a busy 2-core machine a
  forward took 0.5 s with 2 threads, 5 ms with 1)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
  built = {}

  def get(name):
    if name not in built:
      make, ref, shapes = CASES[name]
      torch.manual_seed(0)
      model = _randomise(make())
      path = tmp_path_factory.mktemp(name)
      model.save_pretrained(path, safe_serialization=True)
      module, variables = load_dir(path)
      built[name] = {"model": model, "ref": ref, "shapes": shapes, "path": path,
                     "module": module, "variables": variables,
                     "apply": _jit(module.apply)}
    return built[name]

  return get


def _check(out, ref, tol, what):
  assert set(ref) <= set(out), (what, sorted(ref), sorted(out))
  for key, r in ref.items():
    o = np.asarray(out[key], np.float32)
    assert o.shape == r.shape, (what, key, o.shape, r.shape)
    err = float(np.abs(o - r).max())
    bound = tol * (float(np.abs(r).max()) if tol > TOL else 1.0)
    assert err <= bound, f"{what} {key}: max abs diff {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_parity(cases, name):
  case = cases(name)
  expected = set(_reference(case, case["shapes"][0]))
  for shape in case["shapes"]:
    out = case["apply"](case["variables"], jnp.asarray(_inputs(shape).transpose(0, 2, 3, 1)))
    assert set(out) == expected, (name, sorted(out))  # no output more, none less than HF's
    _check(out, _reference(case, shape), TOL, f"{name} {shape}")


@pytest.mark.parametrize("name", ["vit_classification", "dinov2_swiglu", "clip_full"])
def test_bf16(cases, name):
  case = cases(name)
  module, variables = load_dir(case["path"], dtype=jnp.bfloat16)
  shape = NATIVE[1]
  out = _jit(module.apply)(variables, jnp.asarray(_inputs(shape).transpose(0, 2, 3, 1)))
  assert all(v.dtype == jnp.float32 for v in out.values())  # outputs come back as float32
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda p: p.dtype == np.float32,
                                                       variables))
  _check(out, _reference(case, shape), BF16_TOL, f"{name} bf16")


def test_new_head(cases):
  """num_classes=n: a new zero head "classifier" reading the same features; checkpoint's unused."""
  case = cases("dinov2_classification")
  module, variables = load_dir(case["path"], num_classes=7)
  assert variables["params"]["classifier"]["kernel"].shape == (2 * D, 7)  # [CLS, patch mean]
  out = _jit(module.apply)(variables, jnp.asarray(_inputs(NATIVE[0]).transpose(0, 2, 3, 1)))
  ref = _reference(case, NATIVE[0])
  np.testing.assert_allclose(out["features"], ref["features"], atol=TOL, rtol=0)
  np.testing.assert_array_equal(out["logits"], np.zeros((1, 7), np.float32))


@pytest.mark.parametrize("size_in,size_out", [(4, 7), (7, 4), (5, 5), (1, 3), (3, 1), (6, 13),
                                              (37, 16), (2, 9)])
def test_bicubic_matches_torch(size_in, size_out):
  x = np.random.RandomState(size_in * 100 + size_out).randn(1, 3, size_in, size_in + 2)
  x = x.astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size_out, size_out + 3),
                                         mode="bicubic", align_corners=False).numpy()
  got = vit_encoder.resize_bicubic(jnp.asarray(x[0].transpose(1, 2, 0)), (size_out, size_out + 3))
  np.testing.assert_allclose(np.asarray(got).transpose(2, 0, 1)[None], want, atol=1e-5, rtol=0)


def test_defaults_match_hf_configs(cases):
  """DEFAULTS fill what a config.json leaves out (hand-written or older configs, e.g. a nested
  vision_config holding only non-default values); they must be HF's own defaults."""
  for family, cls in [("vit", transformers.ViTConfig), ("dinov2", transformers.Dinov2Config),
                      ("clip", transformers.CLIPVisionConfig)]:
    hf = cls()
    for key, value in vit.DEFAULTS[family].items():
      want = None if key == "pooler_output_size" else getattr(hf, key)  # HF: None -> hidden_size
      assert value == want, (family, key)
  path = cases("clip_full")["path"]
  with open(path / "config.json") as f:
    config = json.load(f)
  keys = frozenset(safetensors.numpy.load_file(str(path / "model.safetensors")))
  sparse = dict(config, vision_config={k: v for k, v in config["vision_config"].items()
                                       if vit.DEFAULTS["clip"].get(k, "absent") != v})
  assert len(sparse["vision_config"]) < len(config["vision_config"])
  assert vit.build(sparse, keys) == vit.build(config, keys)


def test_dropout_only_when_configured(tmp_path):
  """train=True changes nothing at zero rates (no rng needed) and applies dropout otherwise."""
  torch.manual_seed(0)
  model = _randomise(transformers.ViTModel(_vit_config(hidden_dropout_prob=0.1,
                                                       attention_probs_dropout_prob=0.1)))
  model.save_pretrained(tmp_path, safe_serialization=True)
  module, variables = load_dir(tmp_path)
  x = jnp.asarray(_inputs(NATIVE[0]).transpose(0, 2, 3, 1))
  eval_out = _jit(module.apply)(variables, x)["pooler_output"]
  train_out = _jit(lambda v, x, rng: module.apply(v, x, train=True, rngs={"dropout": rng}))(
      variables, x, jax.random.key(1))["pooler_output"]
  assert float(jnp.abs(train_out - eval_out).max()) > 1e-3
  quiet = module.clone(embed_dropout=0.0, attention_dropout=0.0, attention_out_dropout=0.0,
                       mlp_out_dropout=0.0)
  quiet_out = _jit(lambda v, x: quiet.apply(v, x, train=True))(variables, x)["pooler_output"]
  np.testing.assert_allclose(quiet_out, eval_out, atol=1e-6, rtol=0)


def test_teachers_load(cases):
  """The public loader on these checkpoints: prefixes, skipped text tower, a new head."""
  from kdjax.hf import pretrained

  shape = NATIVE[1]
  x = jnp.asarray(_inputs(shape).transpose(0, 2, 3, 1))
  case = cases("clip_full")
  _check(pretrained.load(str(case["path"]))(x), _reference(case, shape), TOL, "load clip_full")
  case = cases("dinov2_classification")
  teacher = pretrained.load(str(case["path"]), num_classes=7)
  out = teacher(x)
  np.testing.assert_allclose(out["features"], _reference(case, shape)["features"], atol=TOL,
                             rtol=0)
  assert out["logits"].shape == (3, 7)
