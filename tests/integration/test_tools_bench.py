"""The benchmark's PyTorch reference computes kdjax's step (same architectures, same loss, same
teacher input), and `python -m kdjax.tools.bench` writes its table and JSON."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import run_python

from kdjax import configlib, losses, models
from kdjax.distill import objective, teacher_views
from kdjax.tools import torch_reference as ref


def _flax_count(cfg, num_classes, size):
  model = models.build(cfg, num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name,stem,width,wm,cifar", [
    ("resnet18", "cifar", 64, 1.0, True), ("resnet34", "imagenet", 16, 1.0, True),
    ("mobilenet_v2", "cifar", 64, 1.0, True), ("mobilenet_v2", "cifar", 64, 0.5, False)])
def test_reference_students_have_kdjax_layouts(name, stem, width, wm, cifar):
  cfg = configlib.base().model
  cfg.name, cfg.stem, cfg.width, cfg.width_multiplier, cfg.cifar_strides = (
      name, stem, width, wm, cifar)
  model = ref.student(cfg, 10)
  torch_params = sum(p.numel() for p in model.parameters())
  assert torch_params == _flax_count(cfg, 10, 32)
  logits, feats = model(torch.randn(2, 3, 32, 32))
  assert logits.shape == (2, 10) and feats.shape[1] == model.head.in_features


def _dense(linear):
  return {"kernel": jnp.asarray(linear.weight.detach().numpy().T),
          "bias": jnp.asarray(linear.bias.detach().numpy())}


def test_reference_loss_equals_kdjax_terms():
  cfg = configlib.base().loss
  cfg.kd_weight, cfg.align_weight, cfg.unif_weight = 1.0, 0.5, 2.0
  cfg.aft_weight, cfg.feature_kd_weight = 3.0, 0.25
  weights = objective.weights(cfg)
  b, d_s, d_t, c = 12, 16, 24, 5
  torch.manual_seed(0)
  obj = ref.Objective(cfg, weights, d_s, d_t)
  with torch.no_grad():
    obj.rho.normal_()
  logits, g, phi, t_logits = (torch.randn(b, c), torch.randn(b, d_s), torch.randn(b, d_t),
                              torch.randn(b, c))
  labels = torch.randint(0, c, (b,))
  got = float(obj(logits, g, labels, phi, t_logits).detach())

  j = lambda t: jnp.asarray(t.detach().numpy())  # noqa: E731
  sp, tp = obj.student_proj.net, obj.teacher_proj.net
  z_s = losses_head(j(g), _dense(sp[0]), _dense(sp[2]))
  z_t = losses_head(j(phi), _dense(tp[0]), _dense(tp[2]))
  fk = _dense(obj.feature_kd)
  want = (float(jnp.mean(optax_ce(j(logits), j(labels), c)))
          + 1.0 * float(losses.kd_kl(j(logits), j(t_logits), 4.0))
          + 0.5 * float(losses.alignment(z_s, z_t))
          + 2.0 * 0.5 * float(losses.uniformity(z_s) + losses.uniformity(z_t))
          + 3.0 * float(losses.aft(j(g), j(phi), j(obj.rho)))
          + 0.25 * float(losses.feature_kd(j(g), j(phi), fk["kernel"], fk["bias"])))
  np.testing.assert_allclose(got, want, rtol=2e-5)


def losses_head(x, hidden, out):
  h = objective.ProjectionHead("mlp", out["kernel"].shape[1])
  return h.apply({"params": {"hidden": hidden, "out": out}}, x)


def optax_ce(logits, labels, c):
  from kdjax import steps
  return steps.cross_entropy(logits, labels, c)


def test_reference_teacher_pixels_equal_kdjax():
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  view = teacher_views.TeacherView("t", None, (40, 40), 1 / 255, (0.485, 0.456, 0.406),
                             (0.229, 0.224, 0.225), 8, None)
  want = np.asarray(teacher_views.to_teacher_pixels(jnp.asarray(x), mean, std, view))
  got = ref.to_teacher_pixels(torch.from_numpy(x).permute(0, 3, 1, 2), mean, std, (40, 40),
                              view.rescale, view.mean, view.std).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_bench_cli_writes_table_and_ratios(tmp_path):
  """The CLI end to end on its cheapest row (a teacher forward; the train-step rows share the
  same timing and reporting code): the real-architecture teacher saved by transformers, loaded
  by kdjax.hf.pretrained, timed beside the HF PyTorch model."""
  out = str(tmp_path / "bench")
  proc = run_python(["-m", "kdjax.tools.bench", "--config=configs/demo.py:arm=scratch", "--batch=2",
                     "--rows=teacher", "--families=mobilenet_v2", "--teacher_size=32",
                     "--steps=2", "--warmup=1", f"--out={out}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.load(open(out + ".json"))
  (row,) = result["rows"]
  assert row["row"] == "teacher mobilenet_v2 forward" and row["batch"] == 2
  assert row["checkpoint"] == "google/mobilenet_v2_1.0_224"
  assert row["kdjax"]["seconds"] > 0 and len(row["kdjax"]["all_seconds"]) == 2
  # MobileNetV2 1.0: 0.30 GMACs = 0.60 GFLOPs at 224 px; x (32/224)^2 at 32 px = 12.2 MFLOPs
  assert 2 * 0.8 * 12.2e6 < row["kdjax"]["xla_flops"] < 2 * 1.3 * 12.2e6
  assert set(row["torch"]) == {"nchw"} and row["torch"]["nchw"]["seconds"] > 0
  assert row["kdjax_over_torch"] == pytest.approx(
      row["kdjax"]["images_per_s"] / row["torch"]["nchw"]["images_per_s"])
  assert result["machine"]["cpus"] == os.cpu_count() and result["machine"]["torch"]
  table = open(out + ".md").read()
  assert "| teacher mobilenet_v2 forward | 2 |" in table and "kdjax / torch" in table
