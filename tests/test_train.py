"""The trainer end to end: device-count invariance, exact resume, logs and cost, the CLI."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import REPO, run_python

from kdjax import runtime

EIGHT_DEVICES = {
    "XLA_FLAGS": runtime.with_cpu_flags("--xla_force_host_platform_device_count=8")}


def _train(tfds_dir, workdir, env=None, **overrides):
  out = str(workdir) + ".npz"
  proc = run_python([os.path.join(REPO, "tests", "train_worker.py"), tfds_dir, str(workdir), out,
                     json.dumps(overrides)], env_extra=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out + ".json") as f:
    info = json.load(f)
  return dict(np.load(out)), info


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_one_and_eight_devices_give_the_same_run(tfds_dir, tmp_path):
  """BatchNorm statistics, augmentation and the loss are global: sharding changes nothing.

  Tolerance: only float32 summation order differs (per-device partial sums). This tiny net
  (width 8, 8 px, BatchNorm over 16 values at 1x1 maps) amplifies that noise step after step
  (after 4 steps: 5e-4), so we compare after 2 steps, where parameters agree to 1e-5
  (measured: 9e-7). Per-device BatchNorm statistics would differ by orders of magnitude more.
  """
  one, info1 = _train(tfds_dir, tmp_path / "one", total_steps=2)
  eight, info8 = _train(tfds_dir, tmp_path / "eight", env=EIGHT_DEVICES, total_steps=2)
  assert (info1["devices"], info8["devices"]) == (1, 8)
  assert one.keys() == eight.keys()
  worst = max(float(np.max(np.abs(one[k] - eight[k]))) for k in one)
  assert worst < 1e-5, worst
  losses1 = [m["train/loss"] for m in _metrics(tmp_path / "one") if "train/loss" in m]
  losses8 = [m["train/loss"] for m in _metrics(tmp_path / "eight") if "train/loss" in m]
  np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
  assert info1["metrics"]["test/count"] == info8["metrics"]["test/count"] == 360


def test_resume_continues_exactly_where_the_checkpoint_left_off(tfds_dir, tmp_path):
  """A run resumed from its step-2 checkpoint ends bit-identical to an uninterrupted one.

  The uninterrupted run also checks the logs, retention (max_to_keep=1) and the cost record;
  evaluating every 2 steps does not change training."""
  full, _ = _train(tfds_dir, tmp_path / "full", max_to_keep=1, eval_every_steps=2)
  _check_logs_checkpoints_and_cost(tmp_path / "full")
  _train(tfds_dir, tmp_path / "cut")
  ckpts = tmp_path / "cut" / "checkpoints"
  assert sorted(os.listdir(ckpts)) == ["2", "4"]
  shutil.rmtree(ckpts / "4")  # as if killed after the step-2 checkpoint
  resumed, info = _train(tfds_dir, tmp_path / "cut")
  for k in full:
    np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
  # The resumed process trained steps 3 and 4 on the same batches: same per-step losses.
  full_losses = {m["step"]: m["train/loss"] for m in _metrics(tmp_path / "full")
                 if "train/loss" in m}
  cut_rows = [m for m in _metrics(tmp_path / "cut") if "train/loss" in m]
  assert [m["step"] for m in cut_rows] == [1, 2, 3, 4, 3, 4]
  assert {m["step"]: m["train/loss"] for m in cut_rows[-2:]} == {3: full_losses[3],
                                                               4: full_losses[4]}
  assert info["metrics"]["cost/train_flops"] == pytest.approx(
      4 * info["metrics"]["cost/flops_per_train_step"])


def _check_logs_checkpoints_and_cost(run):
  rows = _metrics(run)
  assert all("step" in r for r in rows)
  assert {"train/loss", "steps_per_s", "images_per_s"} <= set(rows[0])
  assert [r["step"] for r in rows if "val/accuracy" in r] == [2, 4]
  assert [r["step"] for r in rows if "cost/total_flops" in r] == [4]
  assert os.listdir(run / "checkpoints") == ["4"]  # max_to_keep=1
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tensorboard"))
  with open(run / "cost.json") as f:
    cost = json.load(f)
  # ResNet-18 at width 8 on 8 px: ~1.1 MFLOP forward per image (2 x MACs, padding excluded by
  # XLA); a train step of 16 images is forward + backward, 2-3x that: 3.3e7 measured.
  assert 2e7 < cost["flops_per_train_step"] < 6e7
  assert cost["wall_time_s"] > 0 and cost["total_flops"] > cost["train_flops"]


def test_cli_runs_the_demo_config_and_prints_test_accuracy(tfds_dir, tmp_path):
  proc = run_python(["-m", "kdjax.main", "--config=configs/demo.py:runlocal",
                     f"--workdir={tmp_path}", f"--config.data.data_dir={tfds_dir}",
                     "--config.model.width=8", "--config.total_steps=2"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "final test accuracy:" in proc.stdout and "(360 examples)" in proc.stdout


def test_cli_rejects_a_mistyped_config_key(tmp_path):
  proc = run_python(["-m", "kdjax.main", "--config=configs/demo.py",
                     f"--workdir={tmp_path}", "--config.optimizer.learnin_rate=0.1"])
  assert proc.returncode != 0
  assert "learnin_rate" in proc.stderr
  assert not os.listdir(tmp_path)  # nothing written
