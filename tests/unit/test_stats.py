"""kdjax.stats against hand computations: the 95% interval from Student's t table (not from
scipy), paired differences on the same seeds, the verdict, the aggregate per arm."""

import numpy as np
import pytest

from kdjax import stats


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
