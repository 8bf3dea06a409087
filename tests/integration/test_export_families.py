"""The families' export hooks (kdjax/models/hf/: `hf_export`, `hf_layout`) for MobileNetV2,
DINOv2 and CLIP, with transformers' PyTorch models as the oracle: `hf_layout` is the
<X>ForImageClassification state dict, name for name; a run's backbone (built as a kdjax run
builds it, head-less) with a random head, passed through `hf_export` and
`kdjax.export.hf_tensors`, loads strictly into that model and gives the run's logits; runs that
no transformers class reproduces are refused, naming the formats that export them.
(ResNet and ViT: test_export.py.) Every network is tiny and random.
"""

import json

import jax
import numpy as np
import pytest
import torch
import transformers

from kdjax import errors
from kdjax import export as export_module
from kdjax.models.hf import classifier, common, mobilenet_v2, vit

TOL = 1e-4
C = 5  # classes of the runs' heads
NAMES = [f"class_{i}" for i in range(C)]

MOBILENETS = {  # every option that changes the network's tensors or padding
    "tf_padding": dict(depth_multiplier=0.35),
    "symmetric": dict(depth_multiplier=0.5, tf_padding=False, finegrained_output=False,
                      first_layer_is_expansion=False, expand_ratio=4.0, layer_norm_eps=1e-2),
    # a DeepLabV3 backbone: dilated from output stride 8 on
    "deeplab_stride8": dict(depth_multiplier=0.25, output_stride=8),
}
VIT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=16,
           patch_size=4)
DINOV2 = dict(VIT, mlp_ratio=2)
CLIP_VISION = dict(VIT, intermediate_size=24)


def _clip_config(**kw):
  return transformers.CLIPConfig(vision_config=CLIP_VISION, **kw)


# name: (family, the config.json of the run's backbone, None (a run from model.hub_config) or the
# checkpoint's transformers class (a run from it: its names, the loader hiding its head))
RUNS = {
    **{f"mobilenet_v2_{k}": (mobilenet_v2, transformers.MobileNetV2Config(image_size=32, **v), None)
       for k, v in MOBILENETS.items()},
    # a Dinov2Model backbone reads CLS: its head gets zero weights for the patch mean
    "dinov2_model": (vit, transformers.Dinov2Config(**DINOV2), None),
    # a Dinov2ForImageClassification checkpoint's backbone reads [CLS, patch mean]
    "dinov2_classification": (vit, transformers.Dinov2Config(**DINOV2, num_labels=3),
                              transformers.Dinov2ForImageClassification),
    "clip_classification": (vit, _clip_config(num_labels=3),
                            transformers.CLIPForImageClassification),
    # a hand-written hub_config: the vision config asking for CLIPForImageClassification's head
    "clip_vision_config": (vit, transformers.CLIPVisionConfig(
        **CLIP_VISION, architectures=["CLIPForImageClassification"]), None),
}
ARCHITECTURES = {"mobilenet_v2": "MobileNetV2ForImageClassification",
                 "dinov2": "Dinov2ForImageClassification", "clip": "CLIPForImageClassification",
                 "clip_vision_model": "CLIPForImageClassification"}


def _config(hf_config) -> dict:
  """config.json as save_pretrained writes it (non-default values only)."""
  return json.loads(hf_config.to_json_string(use_diff=True))


def _exported_config(config: dict, architecture: str) -> dict:
  """What kdjax.export writes as config.json around `hf_export`'s config (export/hf.py)."""
  out = {**config, "architectures": [architecture],
         "id2label": {str(i): n for i, n in enumerate(NAMES)},
         "label2id": {n: i for i, n in enumerate(NAMES)}, "torch_dtype": "float32"}
  out.pop("num_labels", None)
  return out


def _torch_model(config: dict, architecture: str) -> torch.nn.Module:
  hf_config = transformers.AutoConfig.for_model(**config)
  model = getattr(transformers, architecture)(hf_config).eval()
  # the class AutoModelForImageClassification.from_pretrained picks for config.json
  auto = transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(hf_config)]
  assert auto.__name__ == architecture
  return model


def _layout_of(model: torch.nn.Module) -> dict:
  assert {t.dtype for t in model.state_dict().values()} <= {torch.float32, torch.int64}
  return {n: (tuple(t.shape), "int64" if t.dtype == torch.int64 else "float32")
          for n, t in model.state_dict().items()}


def _randomise(variables, seed=0):
  """Every leaf random, kernels at He scale (activations stay O(1) through MobileNetV2's 17
  blocks), batch-norm variances positive: a mapping that swaps, transposes or drops any element
  cannot give the same logits."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.RandomState(seed)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      value = rng.uniform(0.5, 2.0, leaf.shape)
    elif name.endswith("['kernel']"):
      value = rng.normal(0, (2 / np.prod(leaf.shape[:-1])) ** 0.5, leaf.shape)
    else:
      value = rng.normal(0, 0.5, leaf.shape)
    out.append(value.astype(np.float32))
  return jax.tree_util.tree_unflatten(tree, out)


def _run(case: str, x: np.ndarray):
  """(config.json, run-style logits fn inputs): the run's backbone as kdjax builds it (head-less
  config, the checkpoint's names without its head) with a random head [D, C], as a HubClassifier;
  its variables as export hands them to `hf_export`."""
  family, hf_config, checkpoint_cls = RUNS[case]
  config = _config(hf_config)
  keys = frozenset()
  if checkpoint_cls is not None:  # its save_pretrained records the class in config.json
    config["architectures"] = [checkpoint_cls.__name__]
    keys = frozenset(k for k in checkpoint_cls(hf_config).state_dict()
                     if k.split(".")[0] != "classifier")
  backbone = family.build(config, keys, num_classes=None)
  run_module = classifier.HubClassifier(backbone, C)
  # shapes only (an eager init compiles every initialiser): every leaf is drawn here
  variables = _randomise(jax.eval_shape(run_module.init, jax.random.key(0), x))
  logits, _ = run_module.apply(variables, x)
  head_variables = {"params": {**variables["params"]["backbone"],
                               "classifier": variables["params"]["classifier"]}}
  if "batch_stats" in variables:
    head_variables["batch_stats"] = variables["batch_stats"]["backbone"]
  return family, config, head_variables, np.asarray(logits)


# ------------------------------------------------------------------------------ hf_layout


LAYOUTS = {  # (family, transformers head model): tensors only, nothing runs
    **{f"mobilenet_v2_{k}": (mobilenet_v2, transformers.MobileNetV2ForImageClassification,
                             transformers.MobileNetV2Config(image_size=32, **v))
       for k, v in MOBILENETS.items()},
    "dinov2": (vit, transformers.Dinov2ForImageClassification, transformers.Dinov2Config(**DINOV2)),
    "dinov2_no_qkv_bias": (vit, transformers.Dinov2ForImageClassification,
                           transformers.Dinov2Config(**DINOV2, qkv_bias=False)),
    "dinov2_swiglu": (vit, transformers.Dinov2ForImageClassification,
                      transformers.Dinov2Config(**DINOV2, use_swiglu_ffn=True)),
    "clip": (vit, transformers.CLIPForImageClassification, _clip_config()),
}


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_hf_layout_is_transformers_state_dict(case):
  family, model_cls, hf_config = LAYOUTS[case]
  config = _exported_config(_config(hf_config), model_cls.__name__)
  expected = _layout_of(_torch_model(config, model_cls.__name__))
  layout = family.hf_layout(config, C)
  assert {n: (tuple(s), d) for n, (s, d) in layout.items()} == expected


# ------------------------------------------------------------------------------ hf_export


def _check_exports(cases, shape, tmp_path):
  """Each run -> hf_export -> hf_tensors -> the transformers model (strict): the run's logits;
  the import converter reads the tensors back to hf_export's variables, bit for bit."""
  x = np.random.RandomState(1).normal(size=shape).astype(np.float32)
  for case in cases:
    family, config, variables, logits = _run(case, x)
    assert np.abs(logits).max() > 0.1, case
    export_config, architecture, export_variables = family.hf_export(config, variables)
    assert architecture == ARCHITECTURES[config["model_type"]], case
    config = _exported_config(export_config, architecture)
    layout = family.hf_layout(config, C)
    tensors = export_module.hf_tensors(family, config, layout, export_variables)
    assert {n: (v.shape, str(v.dtype)) for n, v in tensors.items()} == {
        n: (tuple(s), d) for n, (s, d) in layout.items()}, case
    module = family.build(config, frozenset(layout), num_classes=None)
    back = family.convert(common.Tensors(dict(tensors), getattr(family, "PREFIXES", ())),
                          module)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, export_variables))

    # config.json as export writes it: transformers reads it to the same class
    (tmp_path / f"{case}.json").write_text(json.dumps(config))
    saved = transformers.AutoConfig.from_pretrained(tmp_path / f"{case}.json")
    torch_model = transformers.AutoModelForImageClassification.from_config(saved).eval()
    assert type(torch_model).__name__ == architecture, case
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()},
                                strict=True)
    with torch.no_grad():
      expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0, err_msg=case)


def test_mobilenet_v2_runs_export_to_transformers_logits(tmp_path):
  # 33 x 45: TF SAME pads are asymmetric; one test, so the cases share compiled ops
  _check_exports([c for c in RUNS if c.startswith("mobilenet_v2")], (2, 33, 45, 3), tmp_path)


def test_dinov2_and_clip_runs_export_to_transformers_logits(tmp_path):
  _check_exports([c for c in RUNS if not c.startswith("mobilenet_v2")], (2, 16, 16, 3), tmp_path)


def test_a_vit_pooler_is_dropped(tmp_path):
  """A ViTModel backbone's pooler is not what its run's head reads, nor in the exported model."""
  config = _config(transformers.ViTConfig(**VIT, intermediate_size=24))
  module = vit.build(config, frozenset({"pooler.dense.weight"}))
  params = _randomise(jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 16, 16, 3))))
  params = {**params["params"], "classifier": {"kernel": np.ones((16, C), np.float32),
                                               "bias": np.zeros(C, np.float32)}}
  config_out, architecture, out = vit.hf_export(config, {"params": params})
  assert architecture == "ViTForImageClassification" == vit.HF_CLASSIFIER
  assert set(out["params"]) == set(params) - {"pooler"}
  layout = vit.hf_layout(_exported_config(config_out, architecture), C)
  exported = vit.build(config_out, frozenset(layout), num_classes=None)
  assert set(jax.eval_shape(exported.init, jax.random.key(0), np.zeros((1, 16, 16, 3)))[
      "params"]) == set(out["params"])


# ------------------------------------------------------------------------------ refusals


def _head_variables(config: dict, keys=frozenset(), rows=None) -> dict:
  module = vit.build(config, keys)
  params = _randomise(jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 16, 16, 3))))
  rows = rows or config.get("hidden_size") or config["vision_config"]["hidden_size"]
  return {"params": {**params["params"], "classifier": {
      "kernel": np.zeros((rows, C), np.float32), "bias": np.zeros(C, np.float32)}}}


@pytest.mark.parametrize("case", ["clip_vision_model", "clip_model_projection"])
def test_a_clip_run_on_the_cls_token_is_refused_naming_the_formats_that_work(case):
  """CLIPForImageClassification reads the patch-token mean; a CLIPVisionModel / CLIPModel
  backbone's run reads the normalised CLS: no transformers checkpoint gives its logits."""
  if case == "clip_vision_model":
    config, keys = _config(transformers.CLIPVisionConfig(**CLIP_VISION)), frozenset()
  else:
    config = {**_config(_clip_config(projection_dim=12)), "architectures": ["CLIPModel"]}
    keys = frozenset({"visual_projection.weight"})
  variables = _head_variables(config, keys)
  with pytest.raises(errors.UserError, match="CLS.*CLIPForImageClassification.*patch tokens.*"
                     "--format=stablehlo.*--format=onnx"):
    vit.hf_export(config, variables)


def test_a_head_of_another_width_is_refused():
  config = _config(transformers.Dinov2Config(**DINOV2))
  with pytest.raises(errors.UserError, match="head reads 24 features.*gives 16"):
    vit.hf_export(config, _head_variables(config, rows=24))


def test_dinov2_mask_token_is_written_by_hf_tensors():
  x = np.zeros((1, 16, 16, 3), np.float32)
  family, config, variables, _ = _run("dinov2_model", x)
  config, architecture, variables = family.hf_export(config, variables)
  config = _exported_config(config, architecture)
  tensors = export_module.hf_tensors(family, config, family.hf_layout(config, C), variables)
  np.testing.assert_array_equal(tensors["dinov2.embeddings.mask_token"], 0)
