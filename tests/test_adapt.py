"""Starting from a Hub checkpoint: teacher linear probe / fine-tune and pre-trained students.

The checkpoint is a tiny random HF ResNet saved by the test (tests/conftest.py); the probe's
output must equal an independent computation: frozen features (pretrained.load without head)
times the trained head.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from kdjax import checkpoint
from kdjax.hf import pretrained
from kdjax.train import trainer


def _config(tfds_dir, pretrained, **overrides):
  return tiny_config(tfds_dir, **{"model.pretrained": pretrained, "model.name": "hub",
                                  "data.load_size": 16, "data.image_size": 16,
                                  "optimizer.name": "adamw", "optimizer.learning_rate": 1e-2,
                                  **overrides})


def test_linear_probe_trains_only_the_head_and_becomes_a_teacher(tfds_dir, tiny_hub_resnet,
                                                                 tmp_path):
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.freeze_backbone": True})
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert set(result.state.params) == {"classifier"} and not result.state.batch_stats
  # Only the head is checkpointed: the frozen backbone is rebuilt from its source.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 3)
  saved = ckpt.saved_structure(ckpt.latest_step())
  ckpt.close()
  assert set(saved["params"]) == {"classifier"} and not saved["batch_stats"]
  # The exact source is recorded, so the head meets the backbone it was trained on.
  record = json.loads((tmp_path / "pretrained.json").read_text())
  assert record == {"source": tiny_hub_resnet, "hub": False, "revision": None}
  # The run records the checkpoint's normalisation (no preprocessor file: ImageNet's).
  run = json.loads((tmp_path / "config.json").read_text())
  assert run["data"]["mean"] == [0.485, 0.456, 0.406]

  adapted = pretrained.load(str(tmp_path))  # the workdir is a teacher now
  head = result.state.params["classifier"]
  assert float(jnp.abs(head["kernel"]).max()) > 0  # the probe learned something
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  features = pretrained.load(tiny_hub_resnet, num_classes=0)(x)["features"]
  expected = features @ head["kernel"] + head["bias"]
  out = adapted(x)
  assert out["logits"].shape == (3, 10)  # kdjax_digits has 10 classes
  np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
  assert adapted.image_size == (16, 16)


def test_fine_tune_scales_the_backbone_learning_rate(tfds_dir, tiny_hub_resnet, tmp_path):
  source = pretrained.load(tiny_hub_resnet, num_classes=0).variables
  kernel = lambda params: np.asarray(params["stages_1_layers_0"]["layer0"]["conv"]["kernel"])  # noqa: E731
  frozen = trainer.train_and_evaluate(
      _config(tfds_dir, tiny_hub_resnet, **{"optimizer.backbone_lr_scale": 0.0}),
      str(tmp_path / "scale0")).state
  np.testing.assert_array_equal(kernel(frozen.params["backbone"]), kernel(source["params"]))
  assert float(jnp.abs(frozen.params["classifier"]["kernel"]).max()) > 0
  # BatchNorm statistics still follow the task's data in train mode.
  assert not np.allclose(frozen.batch_stats["backbone"]["embedder"]["bn"]["mean"],
                         source["batch_stats"]["embedder"]["bn"]["mean"])
  tuned = trainer.train_and_evaluate(_config(tfds_dir, tiny_hub_resnet),
                                   str(tmp_path / "scale1")).state
  assert not np.allclose(kernel(tuned.params["backbone"]), kernel(source["params"]))


def test_pretrained_student_must_match_its_name(tfds_dir, tiny_hub_resnet, tmp_path):
  # The tiny checkpoint has ResNet-18's blocks (basic, 2-2-2-2): accepted as resnet18 ...
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.name": "resnet18", "total_steps": 1})
  assert int(trainer.train_and_evaluate(config, str(tmp_path / "ok")).state.step) == 1
  # ... but it is not a ResNet-34 or a MobileNetV2.
  for name in ("resnet34", "mobilenet_v2"):
    with pytest.raises(ValueError, match=f"is not a '{name}'.*'hub'.*\\['resnet18'\\]"):
      trainer.train_and_evaluate(_config(tfds_dir, tiny_hub_resnet, **{"model.name": name}),
                               str(tmp_path / name))
  with pytest.raises(ValueError, match="freeze_backbone=True needs model.pretrained"):
    trainer.train_and_evaluate(_config(tfds_dir, "", **{"model.name": "resnet18",
                                                      "model.freeze_backbone": True}),
                             str(tmp_path / "bad"))


def test_cli_names_the_fix_for_a_missing_teacher(tmp_path):
  from conftest import run_python

  proc = run_python(["-m", "kdjax.main", "--config=configs/adapt.py:runlocal",
                     f"--config.model.pretrained={tmp_path / 'absent'}",
                     f"--workdir={tmp_path / 'run'}"])
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"error: teacher '{tmp_path / 'absent'}': no such directory" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_fsdp_frozen_backbone_trains_like_a_replicated_one(tfds_dir, tiny_hub_resnet, tmp_path):
  """8 fake devices: the probe's frozen backbone split over the devices (FSDP) or replicated
  gives the same head: XLA gathers the shards where the forward pass needs them."""
  from conftest import REPO, run_python

  from kdjax import runtime

  env = {"XLA_FLAGS": runtime.with_cpu_flags("--xla_force_host_platform_device_count=8")}
  heads = {}
  for mode in ("replicate", "fsdp"):
    overrides = {"model.pretrained": tiny_hub_resnet, "model.name": "hub",
                 "model.freeze_backbone": True, "model.param_sharding": mode,
                 "model.fsdp_min_size": 512, "data.load_size": 16, "data.image_size": 16,
                 "optimizer.name": "adamw", "optimizer.learning_rate": 1e-2, "total_steps": 2}
    out = tmp_path / f"{mode}.npz"
    proc = run_python([f"{REPO}/tests/train_worker.py", tfds_dir, str(tmp_path / mode), str(out),
                       json.dumps(overrides)], env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / f"{mode}.npz.json").read_text())["devices"] == 8
    heads[mode] = dict(np.load(out))
  assert heads["fsdp"].keys() == heads["replicate"].keys()
  for key in heads["fsdp"]:
    np.testing.assert_allclose(heads["fsdp"][key], heads["replicate"][key], atol=1e-6)
  # Written by 8 devices, read here on 1: an adapted teacher moves between machines.
  teacher = pretrained.load(str(tmp_path / "fsdp"))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  features = pretrained.load(tiny_hub_resnet, num_classes=0)(x)["features"]
  kernel, bias = (heads["fsdp"][f"['params']['classifier']['{k}']"] for k in ("kernel", "bias"))
  np.testing.assert_allclose(teacher(x)["logits"], features @ kernel + bias, atol=1e-5)


def test_probe_resumes_exactly(tfds_dir, tiny_hub_resnet, tmp_path):
  """Frozen backbone outside the state: a resumed probe ends where an uninterrupted one does."""
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.freeze_backbone": True,
                                                  "checkpoint_every_steps": 2})
  whole = trainer.train_and_evaluate(config, str(tmp_path / "whole")).state
  trainer.train_and_evaluate(config, str(tmp_path / "cut"))
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "4")  # as if killed after step 2's save
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "cut")).state
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
