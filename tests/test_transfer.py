"""The transfer miniature (kdjax/tools/transfer.py, configs/transfer.py,
experiments/transfer.py): fast checks, no training. The dry run's commands are the stages
run_all runs, each parsing into a valid locked config; every student arm trains the same steps
and batch on the same data; the statistics equal hand computations (Student's t from its
table, not from scipy)."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from ml_collections import config_flags

from kdjax import stats, validate
from kdjax.tools import transfer


def _parse(args: list[str]):
  """The config kdjax.main would build from these arguments (locked, overrides applied)."""
  from absl import flags

  argv = ["kdjax.main", *args]
  fv = flags.FlagValues()  # main.py's declaration: overrides are found in sys_argv
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  fv(argv)
  return fv.config, fv.workdir


def test_dry_run_lists_every_stage_with_configs_that_validate(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  root = str(tmp_path / "t")
  out = subprocess.run([sys.executable, "experiments/transfer.py", f"--workdir={root}",
                        "--dry_run", "--sizes=5,20", "--seeds=2"], capture_output=True,
                       text=True, check=True, timeout=120).stdout
  mains = [shlex.split(line)[3:] for line in out.splitlines()
           if line.startswith("python -m kdjax.main ")]
  exports = [line for line in out.splitlines() if line.startswith("python -m kdjax.export ")]
  assert len(exports) == 4  # resnet, vit, student, student_p25: published once
  assert len(mains) == 4 + 2 * 2 * (3 + len(transfer.ARMS))  # pretrain + (adaptations + arms)
  configs = {}
  for args in mains:
    config, workdir = _parse(args)
    validate.check(config)
    rel = os.path.relpath(workdir, root)
    configs[rel] = config
  arms = {k: c for k, c in configs.items() if os.path.basename(k) in transfer.ARMS}
  assert {(c.total_steps, c.batch_size) for c in arms.values()} == {(transfer.ARM_STEPS, 32)}
  for key, c in arms.items():
    n, seed = int(key.split("/")[0][1:]), int(key.split("/")[1][1:])
    assert (c.data.name, c.data.train_split, c.data.test_split) == (
        "kdjax_digits", "train[:437]", "train[437:]+test")
    assert (c.data.n_per_class, c.data.subset_seed, c.seed) == (n, seed, seed)
  c = configs["n20/s1/distill"]
  assert c.teacher.models == os.path.join(root, "n20", "s1", "probe_resnet")
  assert c.model.hub_config == os.path.join(root, "hf", "student") and not c.model.pretrained
  assert c.loss.kd_weight == c.loss.align_weight == c.loss.unif_weight == 1.0
  c = configs["n5/s0/aft_both"]
  assert c.model.pretrained == os.path.join(root, "published", "student")
  assert c.teacher.models.split(",") == [os.path.join(root, "published", t)
                                         for t in ("resnet", "vit")]
  assert (c.teacher.mode, c.loss.aft_weight, c.optimizer.backbone_lr_scale) == ("cached", 1.0,
                                                                                0.1)
  assert configs["n5/s1/distill_unlabelled"].data.unlabelled_rest
  c = configs["n20/s0/distill_tuned"]
  assert c.teacher.models == os.path.join(root, "n20", "s0", "tune_resnet")
  c = configs["n20/s0/tune_resnet"]
  assert not c.model.freeze_backbone and c.model.pretrained.endswith("published/resnet")
  c = configs["n5/s0/probe_vit"]
  assert c.model.freeze_backbone and c.model.pretrained.endswith("published/vit")
  c = configs["pretrain/resnet"]
  assert (c.data.name, c.data.train_split, c.model.name) == ("kdjax_mnist5k", "train", "hub")
  c = configs["pretrain/student_p25"]
  assert c.data.train_split == "train[:25%]" and c.model.hub_config.endswith("hf/student")
  assert configs["n5/s1/aft_p25"].model.pretrained.endswith("published/student_p25")
  # a mistyped override fails the way kdjax.main fails (the config is locked)
  with pytest.raises((KeyError, AttributeError)):
    _parse(mains[0] + ["--config.data.dataa_dir=x"])


def test_arms_read_only_what_they_name():
  assert transfer.needed(["scratch"]) == ([], [])
  assert transfer.needed(["scratch", "finetune", "distill", "aft"]) == (
      ["resnet", "student"], ["probe_resnet"])
  with pytest.raises(ValueError, match="unknown transfer stage"):
    transfer.config_for("stage=nope")


def test_write_architectures_gives_configs_transformers_reads(tmp_path):
  import transformers

  transfer.write_architectures(tmp_path)
  for name, want in transfer.ARCHITECTURES.items():
    config = transformers.AutoConfig.from_pretrained(tmp_path / "hf" / name)
    for key, value in want.items():
      assert getattr(config, key) == value, (name, key)


def test_interval_and_paired_differences_by_hand():
  t_975_df2 = 4.302652729911275  # Student's t table, 97.5% quantile, 2 degrees of freedom
  mean, half = stats.interval([0.90, 0.92, 0.97])
  assert mean == pytest.approx(0.93)
  assert half == pytest.approx(t_975_df2 * np.std([0.90, 0.92, 0.97], ddof=1) / np.sqrt(3))
  assert stats.interval([0.5]) == (0.5, None)
  runs = [{"stage": a, "seed": s, "n_per_class": 5, "test_accuracy": acc}
          for a, s, acc in [("scratch", 0, 0.80), ("scratch", 1, 0.70), ("scratch", 2, 0.90),
                            ("distill", 0, 0.85), ("distill", 1, 0.76), ("distill", 2, 0.94),
                            ("distill", 3, 0.99)]]  # seed 3 has no scratch: not paired
  d = stats.paired(runs, "distill", "scratch", 5)
  diffs = [0.05, 0.06, 0.04]
  assert d["seeds"] == [0, 1, 2] and d["differences"] == pytest.approx(diffs)
  assert d["mean"] == pytest.approx(0.05)
  assert d["ci95"] == pytest.approx(t_975_df2 * np.std(diffs, ddof=1) / np.sqrt(3))
  assert stats.verdict(d) == "better"  # 0.05 +- 0.0248
  assert stats.verdict(stats.paired(runs, "scratch", "distill", 5)) == "worse"
  noisy = [dict(r) for r in runs]
  noisy[3]["test_accuracy"] = 0.70  # differences -0.10, +0.06, +0.04: the interval spans 0
  assert stats.verdict(stats.paired(noisy, "distill", "scratch", 5)) == "no effect"
  assert stats.paired(runs, "distill", "scratch", 20) is None
  agg = stats.aggregate(runs)
  assert agg[(5, "distill")]["seeds"] == [0, 1, 2, 3]
  assert agg[(5, "scratch")]["mean"] == pytest.approx(0.80)


def test_experiment_tables_from_records(tmp_path):
  """tables() and plot() on made-up records: every arm's row, cost sums, the claims rows."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import transfer as experiment  # experiments/transfer.py

  rng = np.random.default_rng(0)
  rec = lambda stage, n, s, flops: {  # noqa: E731
      "stage": stage, "n_per_class": n, "seed": s, "test_accuracy": float(rng.uniform(.8, 1)),
      "val_accuracy": 0.9, "agreement": None, "total_flops": flops, "wall_time_s": 1.0,
      "steps": 3, "batch_size": 2}
  arms = list(transfer.ARMS)
  result = {"pretrain": {n: rec(f"pretrain_{n}", 0, 0, 1e12)
                         for n in ("resnet", "vit", "student", "student_p25")},
            "probes": [rec(p, 5, s, 1e9) for p in ("probe_resnet", "probe_vit", "tune_resnet")
                       for s in range(3)],
            "runs": [rec(a, 5, s, 1e10) for a in arms for s in range(3)]}
  text, summary = experiment.tables(result, arms, [5])
  for arm in arms:
    assert f"| {arm} |" in text
  assert summary["costs"]["distill/n5"]["total_flops"] == pytest.approx(1e10 + 1e9)
  assert summary["costs"]["finetune/n5"]["total_flops"] == pytest.approx(1e10 + 1e12)
  assert summary["costs"]["scratch/n5"]["total_flops"] == pytest.approx(1e10)
  assert len(summary["claims"]) == len(experiment.CLAIMS)
  experiment.plot(summary, result, arms, [5], str(tmp_path / "p.png"))
  assert (tmp_path / "p.png").stat().st_size > 10_000


def test_console_filter_drops_library_chatter_keeps_warnings():
  """runtime.QuietLibraries (kdjax.main, the demo, the experiments): libraries' INFO lines and
  the expected warnings go; kdjax's lines and any other library warning stay."""
  import logging

  from kdjax import runtime

  keep = runtime.QuietLibraries().filter

  def record(path, level, message):
    return logging.LogRecord("x", level, path, 1, message, None, None)

  assert not keep(record("/site/orbax/checkpoint/manager.py", logging.INFO, "Saved step 4"))
  assert not keep(record("/site/orbax/checkpoint/manager.py", logging.WARNING,
                         "CheckpointManagerOptions.read_only=True, setting max_to_keep=None."))
  assert not keep(record("/site/tensorflow_datasets/core/dataset_info.py", logging.INFO,
                         "Load dataset info from /data"))
  assert not keep(record("/site/jax/_src/xla_bridge.py", logging.INFO, "Unable to initialize"))
  assert keep(record("/site/orbax/checkpoint/manager.py", logging.WARNING, "disk full"))
  assert keep(record("/site/orbax/checkpoint/manager.py", logging.ERROR, "read_only=True"))
  assert keep(record("/work/kdjax/train/trainer.py", logging.INFO, "step 100/300"))
