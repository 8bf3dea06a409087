"""What a finished distillation run reports about its teachers: AFT's rho, which teacher
features the student was asked to keep (rho.json, rho.npy)."""

import os

import jax
import numpy as np
from absl import logging

from kdjax import files
from kdjax.distill import objective


def rho_report(distiller: objective.Distiller, weights: np.ndarray) -> dict:
  """Which teacher features AFT kept, from the per-feature weights (`objective.rho_weights`)."""
  report, start = {"kind": distiller.cfg.aft_rho, "teachers": []}, 0
  for view in distiller.views:
    r = weights[start:start + view.num_features]
    start += view.num_features
    report["teachers"].append({
        "teacher": view.name, "num_features": view.num_features,
        "mean": float(r.mean()), "std": float(r.std()),
        "fraction_above_0.5": float(np.mean(r > 0.5)),
        "top_features": np.argsort(-r)[:20].tolist()})
  return report


def write(workdir: str, aux: dict, distiller: objective.Distiller | None) -> None:
  """The reports of the trained auxiliary parameters `aux` into `workdir` (process 0)."""
  if jax.process_index() != 0 or "rho" not in aux:
    return
  rho = np.asarray(jax.device_get(objective.rho_weights(aux["rho"])), np.float64)
  report = rho_report(distiller, rho)
  files.write_json(os.path.join(workdir, "rho.json"), report)
  np.save(os.path.join(workdir, "rho.npy"), rho)
  logging.info("AFT rho: %s", [(t["teacher"], round(t["mean"], 3), t["fraction_above_0.5"])
                               for t in report["teachers"]])
