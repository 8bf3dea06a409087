"""The statistics every reported accuracy goes through: a mean over seeds with its 95% confidence
interval (Student's t), paired differences on the same seeds, and the verdict that calls an
effect smaller than its interval no effect."""

import numpy as np
from scipy import stats  # a scikit-learn dependency


def interval(values) -> tuple[float, float | None]:
  """(mean, half-width of the 95% confidence interval of the mean: Student's t, n-1 degrees of
  freedom; None for one value)."""
  x = np.asarray(values, np.float64)
  if len(x) < 2:
    return float(x.mean()), None
  half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
  return float(x.mean()), float(half)


def aggregate(records: list[dict], key: str = "stage") -> dict:
  """(n_per_class, stage) -> mean, 95% interval, per-seed values of test and val accuracy."""
  groups: dict = {}
  for r in records:
    groups.setdefault((r["n_per_class"], r[key]), []).append(r)
  out = {}
  for group, rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["seed"])
    mean, half = interval([r["test_accuracy"] for r in rs])
    val = [r["val_accuracy"] for r in rs if r.get("val_accuracy") is not None]
    out[group] = {"seeds": [r["seed"] for r in rs],
                  "test_accuracy": [r["test_accuracy"] for r in rs], "mean": mean,
                  "ci95": half, "val_mean": float(np.mean(val)) if val else None,
                  "agreement_mean": (float(np.mean([r["agreement"] for r in rs]))
                                     if all(r.get("agreement") is not None for r in rs)
                                     else None)}
  return out


def paired(records: list[dict], arm: str, baseline: str, n_per_class: int) -> dict | None:
  """Mean and 95% interval over seeds of (arm - baseline) on the same seed (same labelled
  images, same initialisation), or None when no seed has both."""
  by = {(r["stage"], r["seed"]): r["test_accuracy"] for r in records
        if r["n_per_class"] == n_per_class}
  seeds = sorted(s for (a, s) in by if a == arm and (baseline, s) in by)
  if not seeds:
    return None
  mean, half = interval([by[(arm, s)] - by[(baseline, s)] for s in seeds])
  return {"mean": mean, "ci95": half, "seeds": seeds,
          "differences": [by[(arm, s)] - by[(baseline, s)] for s in seeds]}


def verdict(diff: dict | None) -> str:
  """'better' / 'worse' when the 95% interval excludes 0, else 'no effect' (or n/a)."""
  if diff is None:
    return "n/a"
  if diff["ci95"] is None:
    return "one seed"
  if diff["mean"] - diff["ci95"] > 0:
    return "better"
  if diff["mean"] + diff["ci95"] < 0:
    return "worse"
  return "no effect"
