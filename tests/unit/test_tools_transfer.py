"""kdjax.tools.transfer (the transfer miniature's stages) and experiments/transfer.py's tables,
without training: the arms read only what they name, the networks' configs load in
transformers, the tables hold every arm, the console filter keeps warnings."""

import os
import sys

import numpy as np
import pytest
from conftest import REPO

from kdjax.tools import transfer


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
