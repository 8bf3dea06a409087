"""kdjax.export --format=hf: a run of a Hub architecture (model.name=hub + model.hub_config) as a
Hugging Face checkpoint directory that transformers (PyTorch) and kdjax.hf.pretrained load to the
run's logits (kdjax's students and adapted teachers: test_export_serving.py).

transformers' PyTorch models are the oracle: hf_layout must be their state dict, name for name;
weights mapped by export must give their logits. Every architecture is tiny and random.
"""

import json
import logging
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from conftest import run_python, snapshot

from kdjax import configlib, errors
from kdjax import export as export_module
from kdjax.hf import preprocessing, pretrained
from kdjax.models.hf import common, resnet, vit
from kdjax.train import trainer

TOL = 1e-4
NUM_CLASSES = 10  # kdjax_digits
SIZE = 16  # data.image_size of the runs; the ViT's config image_size

# ResNet variants: a shortcut by channel change in stage 0 (stride 1), by stride only
# (downsample_in_first_stage with equal channels), bottleneck with and without
# downsample_in_bottleneck; layer_type="bottleneck" is HF's default (left out of config.json).
RESNETS = {
    "basic": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    "basic_stage0_shortcut": dict(embedding_size=8, hidden_sizes=[16, 16], depths=[2, 1],
                                  layer_type="basic"),
    "basic_downsample_first": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2],
                                   layer_type="basic", downsample_in_first_stage=True),
    "bottleneck": dict(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1],
                       layer_type="bottleneck"),
    "bottleneck_downsample": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 2],
                                  layer_type="bottleneck", downsample_in_first_stage=True,
                                  downsample_in_bottleneck=True),
}
VIT = dict(image_size=SIZE, patch_size=4, hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=64)
VITS = {"qkv_bias": dict(VIT, qkv_bias=True), "no_qkv_bias": dict(VIT, qkv_bias=False)}
CASES = {**{f"resnet_{k}": ("resnet", v) for k, v in RESNETS.items()},
         **{f"vit_{k}": ("vit", v) for k, v in VITS.items()}}
FAMILIES = {
    "resnet": (resnet, transformers.ResNetConfig, transformers.ResNetForImageClassification),
    "vit": (vit, transformers.ViTConfig, transformers.ViTForImageClassification)}


def _saved_config(tmp_path, arch, kwargs, num_labels=None) -> dict:
  """config.json as save_pretrained writes it (non-default values only): what a run records
  as hf_config.json and export reads."""
  _, config_cls, _ = FAMILIES[arch]
  extra = {} if num_labels is None else {"num_labels": num_labels}
  config_cls(**kwargs, **extra).save_pretrained(tmp_path)
  return json.loads((tmp_path / "config.json").read_text())


def _torch_model(arch, config: dict):
  _, config_cls, model_cls = FAMILIES[arch]
  return model_cls(config_cls.from_dict(config)).eval()


@pytest.fixture(scope="module")
def export():
  """The module under test (its flags are defined only when it runs as a command)."""
  return export_module


# ------------------------------------------------------------------------------ hf_layout


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_layout_is_transformers_state_dict(case, tmp_path):
  arch, kwargs = CASES[case]
  family = FAMILIES[arch][0]
  config = _saved_config(tmp_path, arch, kwargs)
  torch_model = _torch_model(arch, {**config, "num_labels": NUM_CLASSES})
  expected = {name: (tuple(t.shape), "int64" if t.dtype == torch.int64 else "float32")
              for name, t in torch_model.state_dict().items()}
  assert {t.dtype for t in torch_model.state_dict().values()} <= {torch.float32, torch.int64}
  layout = family.hf_layout(config, NUM_CLASSES)
  assert {n: (tuple(s), d) for n, (s, d) in layout.items()} == expected
  assert family.HF_CLASSIFIER == type(torch_model).__name__


# ------------------------------------------------------------------------------ hf_tensors


def _randomise(variables, seed=0):
  """Every leaf random (batch-norm variances positive): a mapping that swaps, transposes or
  drops any element cannot give the same logits."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.RandomState(seed)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    value = (rng.uniform(0.5, 2.0, leaf.shape) if name.endswith("['var']")
             else rng.normal(0, 0.5, leaf.shape))
    out.append(value.astype(np.float32))
  return jax.tree_util.tree_unflatten(tree, out)


@pytest.mark.parametrize("arch, cases", [
    ("resnet", ["resnet_basic_stage0_shortcut", "resnet_bottleneck_downsample"]),
    ("vit", ["vit_qkv_bias", "vit_no_qkv_bias"])])
def test_hf_tensors_of_random_variables_give_transformers_logits(arch, cases, export,
                                                                  tmp_path):
  family = FAMILIES[arch][0]
  x = np.random.RandomState(1).normal(size=(3, SIZE, SIZE, 3)).astype(np.float32)
  for case in cases:  # one test per family: the cases share compiled ops
    config = _saved_config(tmp_path / case, arch, CASES[case][1], num_labels=NUM_CLASSES)
    layout = family.hf_layout(config, NUM_CLASSES)
    module = family.build(config, frozenset(layout), num_classes=None)
    variables = _randomise(jax.tree.map(np.asarray, module.init(jax.random.key(0), x)))

    tensors = export.hf_tensors(family, config, layout, variables)
    assert set(tensors) == set(layout), case
    for name, (shape, dtype) in layout.items():
      assert tensors[name].shape == tuple(shape), (case, name)
      assert tensors[name].dtype == np.dtype(dtype), (case, name)
      if dtype == "int64":
        assert int(tensors[name]) == 0, (case, name)  # num_batches_tracked
    # The import converter reads the tensors back to the very same variables, bit for bit.
    back = family.convert(common.Tensors(dict(tensors), getattr(family, "PREFIXES", ())),
                          module)
    jax.tree.map(np.testing.assert_array_equal, back, variables)

    torch_model = _torch_model(arch, config)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()},
                                strict=True)
    with torch.no_grad():
      expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    logits = np.asarray(module.apply(variables, x)["logits"])
    assert np.abs(expected).max() > 0.1, case
    np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0, err_msg=case)


def test_hf_tensors_refuses_variables_of_another_architecture(export, tmp_path):
  config = _saved_config(tmp_path, "resnet", RESNETS["basic"], num_labels=NUM_CLASSES)
  layout = resnet.hf_layout(config, NUM_CLASSES)
  module = resnet.build(config, frozenset(layout), num_classes=None)
  variables = jax.tree.map(np.asarray, module.init(jax.random.key(0),
                                                   np.zeros((1, SIZE, SIZE, 3), np.float32)))
  del variables["params"]["stages_1_layers_0"]["shortcut"]
  with pytest.raises(errors.UserError, match="do not match.*stages_1_layers_0/shortcut"):
    export.hf_tensors(resnet, config, layout, variables)


# ------------------------------------------------------------------------------ a run, exported


def _hub_run_config(tfds_dir, hub_config_dir):
  c = configlib.base()
  c.model.name = "hub"
  c.model.hub_config = str(hub_config_dir)
  c.data.name = "kdjax_digits"
  c.data.data_dir = tfds_dir
  c.data.load_size = SIZE
  c.data.image_size = SIZE
  # per-channel values, so a channel mix-up in preprocessor_config.json shows
  c.data.mean = (0.4, 0.5, 0.6)
  c.data.std = (0.2, 0.25, 0.3)
  configlib.shrink_for_local_run(c)
  # 4 steps at a high rate: the zero-initialised head gets logits well away from 0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 0.05
  return c


@pytest.fixture(scope="module", params=["resnet", "vit"])
def exported(request, export, tfds_dir, tmp_path_factory):
  """(arch, run dir, the run's metrics, export dir, export's record): one run per architecture
  (model.name=hub from a tiny HF config), exported once."""
  arch = request.param
  root = tmp_path_factory.mktemp(f"export_{arch}")
  kwargs = RESNETS["basic"] if arch == "resnet" else VITS["qkv_bias"]
  _saved_config(root / "hf", arch, kwargs)
  run_dir, out = root / "run", root / "hf_export"
  metrics = trainer.train_and_evaluate(_hub_run_config(tfds_dir, root / "hf"), str(run_dir)).metrics
  record = export.to_hf(str(run_dir), str(out))
  return arch, run_dir, metrics, out, record


def test_exported_run_gives_the_runs_logits_in_transformers_and_kdjax(exported, export,
                                                                       caplog):
  arch, run_dir, metrics, out, record = exported
  run = pretrained.load(str(run_dir))
  images = np.random.RandomState(0).randint(0, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)
  reloaded = pretrained.load(str(out))
  pixels = np.asarray(reloaded.preprocess(images))  # the exported preprocessor_config.json
  logits = np.asarray(run(run.preprocess(images))["logits"])
  assert logits.shape == (4, NUM_CLASSES) and np.abs(logits).max() > 0.1

  # transformers (PyTorch): the architecture config.json names, the run's weights
  with torch.no_grad():
    torch_model = transformers.AutoModelForImageClassification.from_pretrained(out).eval()
    torch_logits = torch_model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).logits
  assert type(torch_model).__name__ == record["architecture"] == FAMILIES[arch][2].__name__
  np.testing.assert_allclose(torch_logits.numpy(), logits, atol=TOL, rtol=0)
  # transformers' own image processor reads preprocessor_config.json to the same pixels
  processor = transformers.AutoImageProcessor.from_pretrained(out, use_fast=False)
  hf_pixels = processor(list(images), return_tensors="np")["pixel_values"]
  np.testing.assert_allclose(hf_pixels.transpose(0, 2, 3, 1), pixels, atol=1e-5, rtol=0)

  # kdjax loads it as any Hub checkpoint, to the run's logits
  np.testing.assert_allclose(np.asarray(reloaded(pixels)["logits"]), logits, atol=TOL, rtol=0)
  pre = preprocessing.preprocessing_of(str(out))
  assert pre == reloaded.preprocess
  assert pre.resize == ("square", (SIZE, SIZE)) and pre.crop is None
  np.testing.assert_allclose(pre.mean, (0.4, 0.5, 0.6))
  np.testing.assert_allclose(pre.std, (0.2, 0.25, 0.3))
  np.testing.assert_allclose(pixels, np.asarray(run.preprocess(images)), atol=1e-6, rtol=0)

  # config.json: the task's class names from the dataset builder (not the index fallback)
  import tensorflow_datasets as tfds

  names = tfds.builder("kdjax_digits", data_dir=json.loads(
      (run_dir / "config.json").read_text())["data"]["data_dir"]).info.features["label"].names
  config = json.loads((out / "config.json").read_text())
  assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
  assert config["label2id"] == {n: i for i, n in enumerate(names)}
  assert config["architectures"] == [record["architecture"]]
  assert config == {**json.loads((run_dir / "hf_config.json").read_text()), **{
      k: config[k] for k in ("architectures", "id2label", "label2id", "torch_dtype")}}
  assert torch_model.config.num_labels == NUM_CLASSES

  # kdjax_export.json: where it came from
  saved = json.loads((out / "kdjax_export.json").read_text())
  assert saved == record
  assert saved["run"] == str(run_dir.resolve()) and saved["step"] == 4
  assert saved["evaluation"]["test/accuracy"] == pytest.approx(metrics["test/accuracy"])
  assert saved["num_classes"] == NUM_CLASSES
  assert sorted(os.listdir(out)) == ["config.json", "kdjax_export.json", "model.safetensors",
                                     "preprocessor_config.json"]
  assert not [p for p in os.listdir(out.parent) if p.startswith(".")]  # no temporary left

  # class names came from the builder: no fallback warning when exporting again
  with caplog.at_level(logging.WARNING, logger="absl"):
    export.to_hf(str(run_dir), str(out.parent / "again"))
  assert not [r for r in caplog.records if "class names" in r.getMessage()]

  # a second export to the same --out is refused and writes nothing; --overwrite replaces it
  before = snapshot(out)
  with pytest.raises(errors.UserError, match="exists.*--overwrite"):
    export.to_hf(str(run_dir), str(out))
  assert snapshot(out) == before
  (out / "stale.txt").write_text("from an earlier export")
  export.to_hf(str(run_dir), str(out), overwrite=True)
  assert not (out / "stale.txt").exists()
  np.testing.assert_allclose(np.asarray(pretrained.load(str(out))(pixels)["logits"]), logits,
                             atol=TOL, rtol=0)


# ------------------------------------------------------------------------------ refusals


def test_cli_missing_out_is_one_line_and_exit_2(tmp_path):
  proc = run_python(["-m", "kdjax.export", f"--workdir={tmp_path}"])
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert [line for line in lines if "error" in line.lower()] == [
      "error: pass --workdir=RUN and --out=DIR"], proc.stderr
  assert "Traceback" not in proc.stderr and not proc.stdout
  assert os.listdir(tmp_path) == []
