"""The papers' recipes (issue: fidelity), each value asserted against the reference code's value,
written here as the literal the reference uses with its file:line, never read from kdjax's
constants. References: paper A `sfarhat/dapt` at ccdbeb1, paper B
`amazon-science/adaptive-feature-transfer` at c0ce571, timm v1.0.3's pretrained configs for the
models paper B names. Also the mechanisms those recipes need, each against an independent
reference: per-teacher input views, DiffAugment (torch's affine_grid / grid_sample), the
random-resized-crop box (torchvision's get_params), the no-kernel AFT term (NumPy), a dataset
without a class. And the fidelity metrics an evaluation with a teacher reports (big_vision's
distillation evaluator: teacher accuracy, top-1 / top-5 agreement, KL) against NumPy."""

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from kdjax import configlib, errors, optim, validate
from kdjax import sharding as shd
from kdjax.data import augment, folder, sources
from kdjax.distill import objective, teacher_views
from kdjax.evaluators import classification
from kdjax.hf import pretrained
from kdjax.train import accounting, trainer


def _config(name, arg=""):
  path = os.path.join(REPO, "configs", name)
  spec = importlib.util.spec_from_file_location(f"fidelity_{name[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# ------------------------------------------------------------------------------ paper A
def test_paper_a_distill_scratch_and_finetune_take_the_reference_recipe():
  c = _config("paper_a.py", "teacher=resnet50,student=resnet18,data=dtd,arm=distill")
  # torch.optim.AdamW(trainable_list.parameters()) with its defaults (objective.py:130-131):
  # lr 1e-3, betas (0.9, 0.999), weight decay 1e-2 on every parameter, no schedule
  o = c.optimizer
  assert (o.name, o.learning_rate, o.b1, o.b2, o.weight_decay) == ("adamw", 1e-3, 0.9, 0.999,
                                                                    1e-2)
  assert o.decay_norm_and_bias and o.schedule == "constant"
  assert (c.batch_size, c.total_epochs) == (64, 250)  # objective.py:293,296
  # objective.py:385-399 (align_uniform): CE 1 + embed 1 + KD 1; kd.py T = 4; align alpha 2,
  # unif t 2 (objective.py:323-326); mocov2 heads to 128-d (objective.py:329)
  loss = c.loss
  assert (loss.ce_weight, loss.kd_weight, loss.align_weight, loss.unif_weight) == (1, 1, 1, 1)
  assert (loss.kd_temperature, loss.align_alpha, loss.unif_t) == (4, 2, 2)
  assert (loss.proj_head, loss.proj_dim) == ("mlp", 128)
  # utils/datasets.py:749-760 (DTD): RandomResizedCrop(224) + flip; test Resize(256) +
  # CenterCrop(224); ImageNet mean/std (datasets.py:691-696)
  d = c.data
  assert (d.augment.kind, tuple(d.augment.scale), tuple(d.augment.ratio)) == (
      "rrc_flip", (0.08, 1.0), (3 / 4, 4 / 3))
  assert (d.load_resize, d.load_size, d.image_size) == ("shorter_full", 256, 224)
  assert d.eval_crop_fraction * 256 == 224
  assert (tuple(d.mean), tuple(d.std)) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  assert c.eval_every_epochs == 1  # objective.py:255: the test split every epoch, best kept
  c = _config("paper_a.py", "data=cifar100,arm=scratch")
  # datasets.py:700-713: Resize(256) (bilinear) + RandomCrop(224) + flip; train_fr.py:56-62:
  # AdamW defaults; scripts/train_fr.sh --epochs=250
  assert (c.data.augment.kind, c.data.augment.pad, c.data.load_size) == ("crop_flip", 0, 256)
  assert (c.data.load_resize, c.data.load_filter) == ("shorter", "bilinear")
  assert (c.optimizer.learning_rate, c.optimizer.weight_decay, c.total_epochs) == (
      1e-3, 1e-2, 250)
  c = _config("paper_a.py", "student=resnet18,data=dtd,arm=finetune")
  # train_ft.py:51-63: AdamW([backbone at 1e-4, head at 1e-3], weight_decay=5e-4 (line 162));
  # scripts/train_ft.sh --epochs=250
  assert c.optimizer.learning_rate * c.optimizer.backbone_lr_scale == pytest.approx(1e-4)
  assert (c.optimizer.learning_rate, c.optimizer.weight_decay, c.total_epochs) == (
      1e-3, 5e-4, 250)
  assert c.optimizer.decay_norm_and_bias


def test_paper_a_teachers_probe_and_caltech_classes():
  # utils/utils.py:53-56: torchvision ResNet-50 IMAGENET1K_V2 and ViT-B/16 IMAGENET1K_V1, both
  # ImageNet-1k only; google/vit-base-patch16-224 (ImageNet-21k) is not their kind
  pa = _config("paper_a.py", "teacher=vit_b16,data=dtd")
  assert pa.teacher.adapt.model.pretrained == "facebook/deit-base-patch16-224"
  assert not pa.teacher.models  # the teacher is adapted into WORKDIR/teacher first
  assert pa.teacher.adapt.to_dict() == _config(
      "adapt.py", "model=facebook/deit-base-patch16-224,task=dtd").to_dict()
  c = _config("adapt.py", "model=facebook/deit-base-patch16-224,task=dtd")
  # train_lp.py:55-56,175,178: AdamW(head params) with its defaults, batch 64, 250 epochs
  assert c.model.freeze_backbone and c.model.pretrained == "facebook/deit-base-patch16-224"
  assert (c.optimizer.learning_rate, c.optimizer.weight_decay, c.batch_size, c.total_epochs) == (
      1e-3, 1e-2, 64, 250)
  assert c.data.to_dict() == pa.data.to_dict()  # the teacher adapts on the student's views
  # datasets.py:831,845-857: torchvision Caltech101 (101 categories, no BACKGROUND_Google),
  # 80% of each class for training
  c = _config("paper_a.py", "data=caltech101")
  assert c.data.exclude_classes == ("background_google",) and c.data.val_fraction == 0.2
  c = _config("paper_a.py", "data=dtd,synthetic=/s,synthetic_fraction=0.5")
  # generated_distill.py:37,143-153: --aug --aug_mode=S, flip_color_crop_rotate_scale_cutout
  assert (c.data.synthetic, c.data.synthetic_fraction, c.data.synthetic_labels) == ("/s", 0.5,
                                                                                   True)
  assert c.data.augment.kind == "rrc_flip_diffaug"
  c.teacher.mode = "cached"  # one DiffAugment operation per batch: a cache cannot replay it
  with pytest.raises(errors.UserError, match="teacher.mode=online"):
    validate.check(c)


# ------------------------------------------------------------------------------ paper B
def test_paper_b_recipe_ids_and_views():
  c = _config("paper_b.py", "teacher=dinov2_g+clip_g,student=vit_s,data=aircraft,arm=aft,val=0")
  # README.md:41 vit_giant_patch14_dinov2.lvd142m + vit_giant_patch14_clip_224.laion2b, whose
  # timm hf_hub_id is laion/CLIP-ViT-g-14-laion2B-s12B-b42K (ViT-g/14, not bigG)
  assert c.teacher.models == "facebook/dinov2-giant,laion/CLIP-ViT-g-14-laion2B-s12B-b42K"
  # timm vision_transformer.py:1333-1338 (DINOv2: 518 px, crop_pct 1.0) and :1523-1526 (CLIP
  # g: 224 px, crop_pct 1.0, OpenAI CLIP mean/std: the laion checkpoint's own)
  assert c.teacher.views == "518/1.0,224/1.0"
  assert _config("paper_b.py", "teacher=clip_l").teacher.views == "224/1.0/inception"  # :1515
  # README.md:43,59-62: Adam, lr 1e-4, batch 128, wd 0, 5000 steps; train.py:138 cosine
  o = c.optimizer
  assert (o.name, o.learning_rate, o.weight_decay, o.schedule) == ("adam", 1e-4, 0.0, "cosine")
  assert (c.batch_size, c.total_steps) == (128, 5000)
  # run.py:15 prior_lr=1e-2 for AFT; run.py:100-101: kd/rkd/ft prior_lr = lr
  assert c.loss.prior_learning_rate == 1e-2
  assert _config("paper_b.py", "arm=feature_kd").loss.prior_learning_rate == 1e-4
  # data.py:150-152 FGVCAircraft trainval/test; final runs: train_frac=1, use_val=False
  # (README.md:52-53): the whole training split, evaluated on test
  assert (c.data.name, c.data.train_split, c.data.test_split, c.data.val_fraction) == (
      "fgvc_aircraft", "trainval", "test", 0.0)
  t = _config("paper_b.py", "data=dtd")  # tuning: use_val=True holds out 10% (run.py:28)
  assert (t.data.train_split, t.data.val_fraction, t.data.test_split) == ("train", 0.1, "")
  # run.py:16 no augmentation; the student's timm eval transform (augreg_in1k: crop_pct 0.9,
  # timm vision_transformer.py:1114-1128): short side 248, central 224
  assert (c.data.augment.kind, c.data.load_resize, c.data.load_size) == ("none", "shorter", 248)
  assert c.data.load_filter == "bicubic"  # timm's eval transforms (interpolation "bicubic")
  assert round(c.data.eval_crop_fraction * 248) == 224
  assert _config("paper_b.py", "student=resnet50").data.load_size == 235  # a1_in1k: 0.95
  n = _config("paper_b.py", "arm=aft_no_kernel")
  assert (n.loss.aft_kernel, n.loss.prior_learning_rate) == ("none", 1e-2)  # run.py:98-99


# ------------------------------------------------------------------------------ teacher views
def _save_processor(path, kind, size, crop, mean, std):
  import json
  config = {"image_processor_type": kind, "do_resize": True, "size": size, "resample": 3,
            "do_center_crop": True, "crop_size": crop, "do_normalize": True,
            "image_mean": list(mean), "image_std": list(std), "do_rescale": True,
            "rescale_factor": 1 / 255}
  with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
    json.dump(config, f)


@pytest.fixture(scope="module")
def dinov2_and_clip(tmp_path_factory):
  """A tiny headless DINOv2 (HF's processor: short side 256, central 224) and a tiny CLIP
  vision tower (short side 224, central 224, OpenAI mean/std), saved as the Hub holds them."""
  import torch
  import transformers

  torch.manual_seed(0)
  vit = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, patch_size=14)
  dino = tmp_path_factory.mktemp("dinov2")
  transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=2, image_size=518, **vit)
                           ).eval().save_pretrained(dino)
  _save_processor(dino, "BitImageProcessor", {"shortest_edge": 256},
                  {"height": 224, "width": 224}, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  clip = tmp_path_factory.mktemp("clip")
  transformers.CLIPVisionModel(transformers.CLIPVisionConfig(intermediate_size=32,
                                                             image_size=224, **vit)
                               ).eval().save_pretrained(clip)
  _save_processor(clip, "CLIPImageProcessor", {"shortest_edge": 224},
                  {"height": 224, "width": 224}, teacher_views.VIEW_NORMS["openai_clip"][0],
                  teacher_views.VIEW_NORMS["openai_clip"][1])
  return str(dino), str(clip)


def test_each_teacher_gets_its_own_view_of_the_shared_image(dinov2_and_clip):
  """One distiller, two teachers: DINOv2 at the AFT reference's 518 px / crop 1.0 and CLIP at
  its checkpoint's 224 px with its own normalisation, fed from one student batch."""
  loaded = [pretrained.load(p) for p in dinov2_and_clip]
  views = [teacher_views.view_of(t, v)
           for t, v in zip(loaded, teacher_views.parse_views("518/1.0,", 2))]
  assert [(v.image_size, v.crop_fraction) for v in views] == [((518, 518), 1.0),
                                                              ((224, 224), 1.0)]
  own = teacher_views.view_of(loaded[0])  # the HF processor alone: the central 224 of 256
  assert (own.image_size, own.crop_fraction, own.resample) == ((224, 224), 224 / 256, "cubic")
  seen = []

  def spy(view):
    def apply(variables, pixels):
      seen.append(np.asarray(pixels))
      return view.apply(variables, pixels)
    return dataclasses.replace(view, apply=apply)

  data_mean, data_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  d = objective.Distiller(configlib.base().loss, [spy(v) for v in views], 10, 8, data_mean,
                        data_std)
  colour = np.asarray([40.0, 128.0, 200.0])  # a flat image: any resize keeps it
  student = np.broadcast_to((colour / 255 - 0.5) / 0.25, (2, 32, 48, 3)).astype(np.float32)
  out = d.teacher_outputs([t.variables for t in loaded], jnp.asarray(student))
  assert out["features"].shape == (2, 32)
  assert [s.shape for s in seen] == [(2, 518, 518, 3), (2, 224, 224, 3)]
  for pixels, (mean, std) in zip(seen, [teacher_views.VIEW_NORMS["imagenet"],
                                        teacher_views.VIEW_NORMS["openai_clip"]]):
    want = (colour / 255 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(pixels, np.broadcast_to(want, pixels.shape), atol=1e-4)


def test_a_teacher_view_crops_then_resizes_as_pil(dinov2_and_clip):
  """The checkpoint's own view (central 224/256, bicubic) of a random image against PIL's
  centre crop and bicubic resize of the same pixels (HF processors resize through PIL)."""
  view = teacher_views.view_of(pretrained.load(dinov2_and_clip[0]))
  view = dataclasses.replace(view, image_size=(28, 28))  # a small output: a fast test
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
  got = np.asarray(teacher_views.to_teacher_pixels(jnp.asarray(image / 255.0), (0, 0, 0), (1, 1, 1),
                                             view))
  crop = image[0, 4:60, 4:60]  # round(64 * 0.875) = 56, offset round(8 / 2) = 4
  want = np.stack([np.asarray(Image.fromarray(crop[..., ch], mode="F").resize(
      (28, 28), Image.BICUBIC)) for ch in range(3)], -1)
  want = (want / 255 - np.asarray(view.mean)) / np.asarray(view.std)
  np.testing.assert_allclose(got[0], want, atol=1e-4)  # the same Keys kernel, a = -0.5


def test_teacher_views_are_validated():
  assert teacher_views.parse_views("", 2) == [None, None]
  assert teacher_views.parse_views("518/1.0, 224/0.875/inception", 2) == [
      (518, 1.0, None), (224, 0.875, "inception")]
  for bad in ("518", "0/1.0,", "224/1.5,", "224/1.0/imagenett,"):
    with pytest.raises(errors.UserError):
      teacher_views.parse_views(bad, 2)


# ------------------------------------------------------------------------------ DiffAugment
def _torch_affine(x, theta):
  import torch
  import torch.nn.functional as F
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
  grid = F.affine_grid(torch.from_numpy(np.array(theta)), xt.shape, align_corners=True)
  return F.grid_sample(xt, grid, align_corners=True).permute(0, 2, 3, 1).numpy()


def test_diffaugment_operations_match_the_reference_code():
  """Each operation of the reference's DiffAugment (sfarhat/dapt utils/augment.py) with given
  parameters: rotate and scale against torch's affine_grid + grid_sample (align_corners=True,
  zero padding), the others against NumPy transcriptions of its formulas."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 16, 20, 3)).astype(np.float32)
  angle = np.asarray([0.2, -0.26, 0.0], np.float32)
  np.testing.assert_allclose(augment.dsa_affine(x, augment.rotation_theta(angle)),
                             _torch_affine(x, augment.rotation_theta(angle)), atol=1e-5)
  sx, sy = np.asarray([1.2, 0.9, 1.0], np.float32), np.asarray([0.85, 1.1, 1.0], np.float32)
  np.testing.assert_allclose(augment.dsa_affine(x, augment.scale_theta(sx, sy)),
                             _torch_affine(x, augment.scale_theta(sx, sy)), atol=1e-5)
  np.testing.assert_allclose(augment.dsa_affine(x, augment.scale_theta(sx, sy))[2], x[2],
                             atol=1e-5)  # the identity
  # rand_crop: x_pad[i + t + 1] of the zero-padded image
  ty, tx = np.asarray([3, -2, 0]), np.asarray([-5, 4, 0])
  got = np.asarray(augment.dsa_translate(x, ty, tx))
  for b in range(3):
    pad = np.pad(x[b], ((1, 1), (1, 1), (0, 0)))
    rows = np.clip(np.arange(16) + ty[b] + 1, 0, 17)
    cols = np.clip(np.arange(20) + tx[b] + 1, 0, 21)
    np.testing.assert_array_equal(got[b], pad[rows][:, cols])
  # rand_cutout: clamp(arange(size) + offset - size // 2, 0, n - 1) rows x columns set to 0
  cy, cx = np.asarray([0, 8, 16]), np.asarray([3, 20, 10])
  got = np.asarray(augment.dsa_cutout(x, cy, cx, 8, 10))
  for b in range(3):
    mask = np.ones((16, 20))
    rows = np.clip(np.arange(8) + cy[b] - 4, 0, 15)
    cols = np.clip(np.arange(10) + cx[b] - 5, 0, 19)
    mask[np.ix_(rows, cols)] = 0
    np.testing.assert_array_equal(got[b], x[b] * mask[..., None])
  # rand_brightness, rand_saturation, rand_contrast in this order
  ub, us, uc = (np.asarray(v, np.float32) for v in ([0.1, 0.9, 0.5], [0.0, 0.7, 1.0],
                                                     [0.3, 0.0, 1.0]))
  want = x + (ub[:, None, None, None] - 0.5) * 1.0
  m = want.mean(axis=3, keepdims=True)
  want = (want - m) * (us[:, None, None, None] * 2.0) + m
  m = want.mean(axis=(1, 2, 3), keepdims=True)
  want = (want - m) * (uc[:, None, None, None] + 0.5) + m
  np.testing.assert_allclose(augment.dsa_color(x, ub, us, uc), want, atol=1e-5)
  flipped = np.asarray(augment.dsa_flip(x, np.asarray([0.2, 0.7, 0.4])))
  np.testing.assert_array_equal(flipped[[0, 2]], x[[0, 2], :, ::-1])
  np.testing.assert_array_equal(flipped[1], x[1])


def test_diffaugment_draws_one_operation_per_batch_and_its_ranges():
  x = np.random.default_rng(1).normal(size=(8, 224, 224, 3)).astype(np.float32)
  u = jnp.asarray(np.random.default_rng(2).uniform(size=(8, 4)), jnp.float32)
  ty, tx = augment._shifts(u, 224, 224)  # int(224 * 0.125 + 0.5) = 28
  assert int(jnp.max(jnp.abs(ty))) <= 28 and int(jnp.max(jnp.abs(tx))) <= 28
  assert augment._cutout_centres(u, 224, 224)[2:] == (112, 112)  # int(224 * 0.5 + 0.5)
  ops = set()
  for seed in range(12):
    keys = jax.random.split(jax.random.key(seed), 8)
    out = np.asarray(augment.diffaugment(jnp.asarray(x), keys))
    op = int(jax.random.randint(jax.random.fold_in(keys[0], 7), (), 0, 6))
    ops.add(op)
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 8), (4,)))(keys)
    if op == 0:
      want = augment.dsa_flip(x, u[:, 0])
    elif op == 1:
      want = augment.dsa_color(x, u[:, 0], u[:, 1], u[:, 2])
    elif op == 2:
      want = augment.dsa_translate(x, *augment._shifts(u, 224, 224))
    elif op == 5:
      want = augment.dsa_cutout(x, *augment._cutout_centres(u, 224, 224))
    else:
      continue  # rotate and scale: their matrices are tested above
    np.testing.assert_allclose(out, want, atol=1e-5)
  assert len(ops) >= 4  # the operation varies from batch to batch


# ------------------------------------------------------------------------------ random crop box
def test_random_resized_crop_box_is_torchvisions():
  """torchvision's get_params: an integer box inside the image whose area and aspect came from
  the ranges (up to rounding); when no try fits, its central fallback, exactly."""
  for seed in range(50):
    top, left, h, w = (int(v) for v in augment.rrc_box(jax.random.key(seed), 30, 50,
                                                       (0.08, 1.0), (3 / 4, 4 / 3)))
    assert 0 < h <= 30 and 0 < w <= 50 and 0 <= top <= 30 - h and 0 <= left <= 50 - w
    assert 0.08 * 1500 * 0.8 <= h * w <= 1500 * 1.05
  # a 10 x 40 image, the whole area at aspect <= 4/3: no try fits (w <= 23 needs h >= 17)
  # -> in_ratio 4 > 4/3: h = 10, w = round(10 * 4/3) = 13, centred
  box = augment.rrc_box(jax.random.key(0), 10, 40, (1.0, 1.0), (3 / 4, 4 / 3))
  assert tuple(int(v) for v in box) == (0, 13, 10, 13)


# ------------------------------------------------------------------------------ no-kernel AFT
def test_aft_without_kernel_is_a_prior_term_against_numpy():
  cfg = configlib.base().loss
  cfg.aft_weight, cfg.aft_kernel = 2.0, "none"
  view = teacher_views.TeacherView("t", None, (8, 8), 1 / 255, (0, 0, 0), (1, 1, 1), 6, None)
  d = objective.Distiller(cfg, [view], 10, 4, (0, 0, 0), (1, 1, 1))
  aux = d.init_aux(jax.random.key(0))
  assert set(aux) == {"aft_map"} and aux["aft_map"]["kernel"].shape == (6, 4)
  bound = 1 / np.sqrt(6)  # torch nn.Linear(6, 4)'s init (prior.py:233)
  assert np.abs(np.asarray(aux["aft_map"]["kernel"])).max() <= bound
  rng = np.random.default_rng(0)
  g, phi = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
  terms, _, _ = d.terms(aux, {}, {}, jnp.asarray(g, jnp.float32), None,
                        {"features": jnp.asarray(phi, jnp.float32)}, jax.random.key(0))
  # prior.py:241-246: target = proj(phi); both centred over the batch; mean squared error
  v, b = (np.asarray(aux["aft_map"][k], np.float64) for k in ("kernel", "bias"))
  target = phi @ v + b
  want = np.mean(((target - target.mean(0)) - (g - g.mean(0))) ** 2)
  assert float(terms["aft"]) == pytest.approx(want, rel=1e-5)
  groups = optim.labels({"model": {}, "aux": aux})["aux"]  # trained at the prior's lr
  assert set(jax.tree.leaves(groups)) == {"prior"}


# ------------------------------------------------------------------------------ excluded classes
def test_a_dataset_without_a_class(tmp_path):
  """data.exclude_classes drops a class from every split and renumbers the others, as
  torchvision's Caltech101 has no BACKGROUND_Google; the images are the same."""
  src = tmp_path / "src"
  splits = {"train": [], "test": []}
  for c, name in enumerate(("accordion", "background_google", "zebra")):
    for i in range(3):
      path = src / f"{name}_{i}.png"
      src.mkdir(exist_ok=True)
      Image.fromarray(np.full((6, 6, 3), 40 * c + i, np.uint8)).save(path)
      splits["train" if i < 2 else "test"].append(folder.Example(path.name, str(path), name))
  folder.write("toy101", str(tmp_path / "tfds"), ["accordion", "background_google", "zebra"],
               splits)
  d = configlib.base().data
  d.name, d.data_dir, d.exclude_classes = "toy101", str(tmp_path / "tfds"), ("background_google",)
  train = sources.open_source(d, "train")
  images, labels = train.read(np.arange(len(train)))
  assert (train.num_classes, train.class_names) == (2, ["accordion", "zebra"])
  assert sorted(zip(labels.tolist(), images[:, 0, 0, 0].tolist())) == [
      (0, 0), (0, 1), (1, 80), (1, 81)]
  assert len(sources.open_source(d, "test")) == 2
  d.exclude_classes = ("background",)
  with pytest.raises(errors.UserError, match="background_google"):
    sources.open_source(d, "train")


# ------------------------------------------------------------------------------ whole images
def test_whole_image_canvas_gives_torchvisions_views():
  """data.load_resize=shorter_full: the eval view is Resize(256) + CenterCrop(224) of the
  original (PIL), for a landscape and a portrait image alike; a random-resized crop whose only
  possible box is the whole image returns the whole image resized as PIL resizes it, upright,
  and a crop box resizes as PIL resizes the cropped image alone (no pixel around it read)."""
  rng = np.random.default_rng(0)
  cfg = configlib.base().data
  cfg.image_size, cfg.eval_crop_fraction, cfg.mean, cfg.std = 56, 56 / 64, (0, 0, 0), (1, 1, 1)
  originals = [rng.integers(0, 256, (90, 135, 3), np.uint8),  # landscape 2:3
               rng.integers(0, 256, (150, 100, 3), np.uint8)]  # portrait, stored transposed
  canvases = np.stack([sources.resize_on_load(o, 64, "shorter_full", 2.0) for o in originals])
  assert canvases.shape == (2, 64, 128, 4)
  eval_view = np.asarray(augment.preprocess_eval(jnp.asarray(canvases), cfg)) * 255
  for got, original in zip(eval_view, originals):
    h, w = original.shape[:2]
    nh, nw = (64, int(64 * w / h)) if h <= w else (int(64 * h / w), 64)
    resized = np.asarray(Image.fromarray(original).resize((nw, nh), Image.BILINEAR))
    top, left = int(round((nh - 56) / 2)), int(round((nw - 56) / 2))
    np.testing.assert_allclose(got, resized[top:top + 56, left:left + 56], atol=1e-3)
  cfg.augment.kind, cfg.augment.flip = "rrc_flip", False
  cfg.augment.scale, cfg.augment.ratio = (1.0, 1.0), (1.5, 1.5)  # the whole 64 x 96 image
  crops = np.asarray(augment.augment(jnp.asarray(canvases), jax.random.key(0), cfg)) * 255
  for got, canvas in zip(crops, canvases):
    upright = canvas[:, :96, :3].astype(np.float32)
    if canvas[0, 0, 3] == sources.FULL_TRANSPOSED:
      upright = upright.transpose(1, 0, 2)
    want = np.stack([np.asarray(Image.fromarray(upright[..., ch], mode="F").resize(
        (56, 56), Image.BILINEAR)) for ch in range(3)], -1)
    np.testing.assert_allclose(got, want, atol=1e-3)
  # a box inside a square image: the crop alone, resized (PIL)
  image = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  box = augment.rrc_box(jax.random.key(3), 40, 40, (0.08, 1.0), (3 / 4, 4 / 3))
  top, left, h, w = (int(v) for v in box)
  got = np.asarray(augment._random_resized_crop(jnp.asarray(image), jax.random.key(3), 16,
                                                (0.08, 1.0), (3 / 4, 4 / 3)))
  crop = image[top:top + h, left:left + w]
  want = np.stack([np.asarray(Image.fromarray(crop[..., ch], mode="F").resize(
      (16, 16), Image.BILINEAR)) for ch in range(3)], -1)
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_evaluation_every_epoch(tfds_dir, tmp_path):
  """eval_every_epochs (paper A's reference tests every epoch): the evaluations fall on the
  steps it gives, counted from the epoch's length."""
  import json

  from conftest import tiny_config

  c = tiny_config(tfds_dir)
  c.total_steps, c.eval_every_steps = 6, None
  c.eval_every_epochs = 2 / 80  # 80 steps per epoch (tiny_config): every 2 steps
  trainer.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert rows[0]["epoch"] == pytest.approx(1 / 80)
  assert [r["step"] for r in rows if "val/accuracy" in r or "test/accuracy" in r] == [2, 4, 6]
  c.eval_every_steps = 3
  with pytest.raises(errors.UserError, match="only one of eval_every_steps"):
    validate.check(c)


# ------------------------------------------------------------------------------ fidelity metrics
class _EvalSet:
  """An eval input of `logits` as images, padded to batches of `size` (mask 0), counting how
  often it is read."""

  def __init__(self, logits, labels, size):
    self.num_examples, self.size = len(labels), size
    self.num_batches = -(-len(labels) // size)
    pad = self.num_batches * size - len(labels)
    self.images = np.concatenate([logits, np.zeros((pad, logits.shape[1]), np.float32)])
    self.labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    self.mask = (np.arange(len(self.labels)) < len(labels)).astype(np.float32)
    self.reads = 0

  def batches(self):
    self.reads += 1
    for b in range(self.num_batches):
      rows = slice(b * self.size, (b + 1) * self.size)
      yield {"image": jnp.asarray(self.images[rows]), "label": jnp.asarray(self.labels[rows]),
             "mask": jnp.asarray(self.mask[rows])}


def test_evaluator_reports_fidelity_against_numpy_teacher_computed_once():
  """Evaluator with a teacher: the teachers' probabilities are computed once per eval set
  (its batches read once more per evaluation, their FLOPs counted once) and kept as float32;
  accuracy, teacher_accuracy, agreement, agreement_top5 (the teacher's top-1 among the student's
  top 5) and kl (KL(teacher || student), T = 1) equal NumPy's over the real examples only."""
  rng = np.random.default_rng(0)
  n, c, size = 37, 7, 16  # 3 batches, 11 padding rows
  logits = (rng.normal(size=(n, c)) * 2).astype(np.float32)
  labels = rng.integers(0, c, n).astype(np.int32)
  w = (rng.normal(size=(c, c)) * 2).astype(np.float32)
  ev = _EvalSet(logits, labels, size)
  mesh = shd.make_mesh()
  batch_sh, repl = shd.batch_sharding(mesh), shd.replicated(mesh)

  def teacher_predict(tv, x):  # bfloat16 probabilities: the evaluator keeps float32
    return jax.nn.softmax(x @ tv["w"], -1).astype(jnp.bfloat16)

  evaluator = classification.Evaluator(
      lambda v, x: x * v["s"], {"test": ev}, c, repl, batch_sh, repl, size,
      lambda b, with_mask: accounting.abstract_batch(b, (c,), batch_sh, with_mask),
      teacher_predict=teacher_predict, teacher_vars={"w": jnp.asarray(w)}, teacher_sharding=repl)
  flops = []
  probs = np.asarray(teacher_predict({"w": w}, jnp.asarray(logits)), np.float64)
  for call, scale in enumerate((1.0, -0.5)):
    out = evaluator(call, {"s": jnp.asarray(scale)}, flops.append)
    assert ev.reads == 2 + call  # the teacher's pass once, then one pass per evaluation
    assert {str(p.dtype) for p in evaluator._teacher_probs["test"]} == {"float32"}
    s = logits.astype(np.float64) * scale
    log_s = s - s.max(-1, keepdims=True)
    log_s -= np.log(np.exp(log_s).sum(-1, keepdims=True))
    student, teacher = s.argmax(-1), probs.argmax(-1)
    top5 = np.argsort(-s, -1)[:, :5]
    want = {"count": n, "accuracy": np.mean(student == labels),
            "teacher_accuracy": np.mean(teacher == labels),
            "agreement": np.mean(student == teacher),
            "agreement_top5": np.mean(np.any(top5 == teacher[:, None], -1)),
            "kl": np.mean(np.sum(probs * (np.log(np.maximum(probs, 1e-300)) - log_s), -1))}
    for key, value in want.items():
      assert out[f"test/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), (call, key)
  assert 0 < want["agreement"] < want["agreement_top5"] < 1  # the metrics are not trivial here
  assert len(flops) == 3 and flops[1] == flops[2]  # teacher FLOPs once, the student's twice
