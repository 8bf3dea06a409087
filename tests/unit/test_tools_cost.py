"""Training-cost accounting (kdjax/tools/cost.py): the pre-training FLOPs against an independent
count, and the arithmetic of a distillation run against pre-train + fine-tune."""

import json
import os

import pytest
from conftest import tiny_config

from kdjax import configlib
from kdjax.tools import cost


def test_imagenet_resnet18_pretraining_flops_match_the_published_count():
  # torchvision lists ResNet-18 at 1.814 GMACs per 224 px image (its "GFLOPS" column): a train
  # step is ~3 forwards (forward, input and weight gradients) of 2 FLOPs per MAC.
  pre = cost.imagenet_pretraining(configlib.base().model)  # the CIFAR config's student
  assert pre["flops_per_image"] == pytest.approx(3 * 2 * 1.814e9, rel=0.12)
  assert pre["flops"] == pre["flops_per_image"] * 1_281_167 * 90


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def test_account_adds_teacher_runs_and_cache_and_compares(tmp_path, tfds_dir):
  config = tiny_config(tfds_dir)
  teacher_dir, run = str(tmp_path / "teacher"), str(tmp_path / "student")
  _write(os.path.join(teacher_dir, "cost.json"), {"total_flops": 3e12, "wall_time_s": 30.0})
  os.makedirs(run)
  with open(os.path.join(run, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  _write(os.path.join(run, "cost.json"), {
      "wall_time_s": 60.0, "train_flops": 4e12, "eval_flops": 1e11, "total_flops": 4.1e12,
      "flops_per_train_step": 1e12, "teacher_cache_flops": 5e11,
      "teacher_cache_wall_time_s": 5.0})
  _write(os.path.join(run, "teachers.json"), [
      {"source": teacher_dir, "hub": False}, {"source": "org/model", "hub": True}])
  a = cost.account(run)
  d, alt = a["distillation"], a["pretrain_then_finetune"]
  assert [p["flops"] for p in d["parts"]] == [4.1e12, 5e11, 3e12]
  assert d["flops"] == pytest.approx(7.6e12) and d["wall_time_s"] == pytest.approx(95.0)
  assert alt["finetune_steps"] == 4
  per_image = cost.train_flops_per_image(config.model, 8, 10, config.batch_size)
  assert alt["finetune_flops"] == pytest.approx(4 * 16 * per_image + 1e11)
  assert alt["flops"] == pytest.approx(alt["pretrain"]["flops"] + alt["finetune_flops"])
  assert a["flops_saved_fraction"] == pytest.approx(1 - 7.6e12 / alt["flops"])
  # wall time of the alternative: its FLOPs at the run's own 4e12 / 60 s
  assert alt["wall_time_s_estimate"] == pytest.approx(alt["flops"] / (4e12 / 60.0))
  assert "saved by distillation" in cost.table(a)
