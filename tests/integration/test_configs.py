"""Every config in configs/ parses, has a launch docstring, and trains a couple of steps locally.

No Hub and no downloads here: each teacher a config names (teacher.models) is replaced by a tiny
random Hugging Face checkpoint of the same family (ResNet, ViT, DINOv2 or CLIP, guessed from
its name) whose head has the task's classes, so KD, alignment/uniformity, AFT and feature-KD
all run; a pre-trained student (model.pretrained) becomes a tiny random ResNet-18-shaped one.
A teacher adapted by the same command (teacher.adapt) is such a tiny checkpoint too, adapted for
2 steps into WORKDIR/teacher by the config's own recipe, as `python -m kdjax.main` runs it.
"""

import glob
import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import REPO
from PIL import Image

from kdjax import configlib
from kdjax.data import prepare, sources
from kdjax.train import adapt

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
# Non-default arguments that take other code paths (each run is ~10-40 s of compiling on 2 cores,
# so only a few): paper A's pre-trained baseline (arm=scratch is a CE-only student, as
# resnet18_cifar.py: test_paper_a_argument_grid checks its config) and a task stored whole
# (aspect-kept canvases, random-resized crops, one class excluded), paper B's multi-teacher AFT
# (a final run: whole training split, test) and its no-kernel variant (tests/test_distill.py
# runs the feature-KD baseline).
EXTRA_ARGS = {
    "paper_a.py": ["arm=finetune", "data=caltech101"],
    "paper_b.py": ["arm=aft,teacher=dinov2_l+clip_l,val=0", "arm=aft_no_kernel"],
}
CASES = [(path, "runlocal") for path in CONFIGS] + [
    (os.path.join(REPO, "configs", name), f"runlocal,{arg}")
    for name, args in EXTRA_ARGS.items() for arg in args]


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _num_classes(data_cfg) -> int:
  """The dataset's class count from its TFDS metadata (nothing is read or prepared), less the
  classes the config excludes."""
  local = sources.LOCAL_BUILDERS.get(data_cfg.name)
  builder = (local(data_dir=data_cfg.data_dir) if local else
             tfds.builder(data_cfg.name, data_dir=data_cfg.data_dir or None))
  return builder.info.features["label"].num_classes - len(data_cfg.exclude_classes)


def _family(name: str) -> str:
  lowered = name.lower()
  return next((f for f in ("dinov2", "clip", "vit") if f in lowered), "resnet")


def _save_tiny_teacher(family: str, num_classes: int, path) -> str:
  """A random HF image classifier of `family` at 32 px with `num_classes` labels."""
  import torch
  import transformers

  torch.manual_seed(0)
  vit = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32,
             patch_size=8)
  if family == "resnet":
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1],
        layer_type="basic", num_labels=num_classes))
  elif family == "vit":
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        intermediate_size=32, num_labels=num_classes, **vit))
  elif family == "dinov2":
    model = transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
        mlp_ratio=2, num_labels=num_classes, **vit))
  else:  # clip: the vision tower with a head (the text tower is not saved)
    vision = transformers.CLIPVisionConfig(intermediate_size=32, **vit)
    model = transformers.CLIPForImageClassification(transformers.CLIPConfig(
        vision_config=vision.to_dict(), num_labels=num_classes))
  model.eval().save_pretrained(path)
  return str(path)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
  """(teacher name, num_classes) -> the directory of a tiny teacher of the same family."""
  made = {}

  def make(name: str, num_classes: int) -> str:
    key = (_family(name), num_classes)
    if key not in made:
      made[key] = _save_tiny_teacher(*key, tmp_path_factory.mktemp(f"tiny_{key[0]}_{key[1]}"))
    return made[key]

  return make


def test_parse_arg_types_and_rejects_unknown_keys():
  arg = configlib.parse_arg("runlocal,width=0.5", runlocal=False, width=1.0)
  assert arg.runlocal is True and arg.width == 0.5
  with pytest.raises(ValueError, match="valid: \\['runlocal'\\]"):
    configlib.parse_arg("runlokal", runlocal=False)


@pytest.mark.parametrize("path,arg", CASES,
                         ids=[f"{os.path.basename(p)}:{a}" for p, a in CASES])
def test_config_runs_locally(path, arg, tfds_dir, tmp_path, tiny_hub_resnet, tiny_teacher):
  module = _load(path)
  assert "python -m kdjax.main --config=configs/" in module.__doc__
  config = module.get_config(arg)
  assert config.data.image_size <= 32, "runlocal must stay tiny"
  config.data.data_dir = tfds_dir
  if config.model.pretrained:  # no Hub here: a tiny random checkpoint of the same kind
    config.model.pretrained = tiny_hub_resnet
  if config.model.hub_config:  # a Hub architecture from scratch: the tiny one's config.json
    config.model.hub_config = tiny_hub_resnet
  names = [n.strip() for n in config.teacher.models.split(",") if n.strip()]
  if names:  # each teacher: a tiny one of its family with a head over the task's classes
    num_classes = _num_classes(config.data)
    config.teacher.models = ",".join(tiny_teacher(n, num_classes) for n in names)
  run = config.teacher.adapt  # the teacher adapted first (empty: none)
  if run:
    run.model.pretrained = tiny_teacher(run.model.pretrained, _num_classes(config.data))
    run.total_steps = 2
    run.checkpoint_every_steps = 2
  if config.data.n_per_class:  # the mock below has ~8 examples per class
    config.data.n_per_class = min(config.data.n_per_class, 2)
  config.total_steps = 2
  config.checkpoint_every_steps = 2
  with tfds.testing.mock_data(num_examples=80):  # 80 random examples of any dataset, local too
    result = adapt.train_and_evaluate(config, str(tmp_path))  # what kdjax.main runs
  # tuning configs (paper B's val=1) evaluate on the validation hold-out only
  split = "test" if config.data.test_split else "val"
  assert result.metrics[f"{split}/count"] > 0
  assert 0.0 <= result.metrics[f"{split}/accuracy"] <= 1.0
  assert int(result.state.step) == 2
  if (names or run) and config.loss.kd_weight and config.teacher.evaluate:
    assert 0.0 <= result.metrics[f"{split}/teacher_accuracy"] <= 1.0
  if run:  # distilled from the adapted teacher, a finished run of its own
    assert (tmp_path / "teacher" / "cost.json").is_file()
    assert (tmp_path / "adapt.json").is_file()
  if config.loss.aft_weight and config.loss.aft_kernel != "none":  # AFT reports which teacher
    assert (tmp_path / "rho.json").is_file()  # features it kept, per teacher


def test_paper_a_argument_grid():
  module = _load(os.path.join(REPO, "configs", "paper_a.py"))
  c = module.get_config("teacher=vit_b16,student=mobilenet_v2,data=cub200")
  assert c.data.name == "caltech_birds2011" and c.data.image_size == 224
  # the teacher is adapted by the same command (paper A's probe, on the student's views) ...
  assert not c.teacher.models and c.teacher.mode == "online"
  run = c.teacher.adapt
  assert run.model.pretrained == "facebook/deit-base-patch16-224" and run.model.freeze_backbone
  assert run.data.to_dict() == c.data.to_dict() and run.total_epochs == 250
  # ... unless an adapted teacher is given (experiments/paper_a.py's grid shares one)
  c = module.get_config("data=cub200,teacher_dir=runs/adapt_vit_b16_cub200")
  assert c.teacher.models == "runs/adapt_vit_b16_cub200" and not c.teacher.adapt
  assert (c.loss.kd_weight, c.loss.align_weight, c.loss.unif_weight) == (1.0, 1.0, 1.0)
  c = module.get_config("arm=finetune,student=mobilenet_v2,data=caltech101")
  assert c.model.pretrained == "google/mobilenet_v2_1.0_224" and not c.teacher.models
  assert c.optimizer.backbone_lr_scale == 0.1 and c.data.val_fraction == 0.2
  c = module.get_config("arm=scratch,teacher_dir=/runs/t")
  assert not c.teacher.models and c.loss.kd_weight == 0.0 and not c.model.pretrained
  with pytest.raises(ValueError, match="unknown arm"):
    module.get_config("arm=pretrain")
  with pytest.raises(ValueError, match="synthetic is for arm=distill"):
    module.get_config("arm=scratch,synthetic=/s")


def test_paper_b_argument_grid():
  module = _load(os.path.join(REPO, "configs", "paper_b.py"))
  c = module.get_config("teacher=dinov2_g+clip_g,data=food101,beta=3")
  assert c.teacher.models.split(",") == [module.TEACHERS["dinov2_g"][0],
                                         module.TEACHERS["clip_g"][0]]
  assert c.loss.aft_weight == 3.0 and c.teacher.mode == "cached"
  c = module.get_config("teacher=dinov2_l+clip_l,arm=kd,data=pets")
  assert c.teacher.models == "runs/adapt_dinov2_l_pets,runs/adapt_clip_l_pets"
  assert c.teacher.views == ""  # adapted teachers: the student's own view
  assert module.get_config("arm=stl").teacher.models == ""
  with pytest.raises(ValueError, match="unknown teacher"):
    module.get_config("teacher=dinov3")


def test_paper_a_prepares_mit_indoor67_as_a_local_tfds_dataset(tmp_path):
  """The docstring's recipe for paper A's task that is not in the TFDS catalog."""
  src = tmp_path / "indoor67"
  rng = np.random.default_rng(0)
  listing = {"TrainImages.txt": [], "TestImages.txt": []}
  for label in ("bakery", "airport_inside"):
    (src / "Images" / label).mkdir(parents=True)
    for i, mode in enumerate(("RGB", "L", "P")):  # the archive holds grey and palette images
      rel = f"{label}/{i}.jpg"
      Image.fromarray(rng.integers(0, 255, (12, 10, 3), np.uint8)).convert(mode).save(
          src / "Images" / rel, format="PNG" if mode == "P" else "JPEG")
      listing["TestImages.txt" if i == 2 else "TrainImages.txt"].append(rel)
  for name, rels in listing.items():
    (src / name).write_text("\n".join(rels) + "\n")
  module = _load(os.path.join(REPO, "configs", "paper_a.py"))
  assert prepare.main(["mit_indoor67", str(src), str(tmp_path / "tfds")]) == 0
  data = module.get_config("data=mit_indoor67").data
  data.data_dir = str(tmp_path / "tfds")
  train_src = sources.open_source(data, data.train_split)
  images, labels = train_src.read(np.arange(len(train_src)))
  assert train_src.num_classes == 2 and train_src.class_names == ["airport_inside", "bakery"]
  assert images.shape == (4, 256, 512, 4) and sorted(labels.tolist()) == [0, 0, 1, 1]
  # stored whole (data.load_resize=shorter_full): the short side to 256, aspect kept; the 12 x 10
  # portrait image -> 307 x 256, stored transposed on a 256 x 512 canvas (its last column
  # repeated), channel 3 marking it
  want = [np.asarray(Image.fromarray(np.asarray(Image.open(
      src / "Images" / "airport_inside" / f"{i}.jpg").convert("RGB"))).resize(
          (256, 307), Image.BILINEAR)).transpose(1, 0, 2) for i in (0, 1)]
  for got in images[labels == 0]:
    assert any(np.array_equal(got[:, :307, :3], w) for w in want)
    np.testing.assert_array_equal(got[:, 307:, :3], np.repeat(got[:, 306:307, :3], 205, 1))
    assert set(np.unique(got[:, :307, 3])) == {128} and not got[:, 307:, 3].any()
  assert len(sources.open_source(data, data.test_split)) == 2
