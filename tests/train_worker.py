"""Subprocess entry for trainer tests: `python tests/train_worker.py TFDS_DIR WORKDIR OUT.npz
JSON_OVERRIDES`. Runs on however many devices XLA_FLAGS gives it; saves final params/stats."""

import json
import sys

import jax
import numpy as np
from conftest import tiny_config

from kdjax.train import trainer


def main(tfds_dir, workdir, out, overrides):
  result = trainer.train_and_evaluate(tiny_config(tfds_dir, **json.loads(overrides)), workdir)
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path({"params": result.state.params,
                                               "batch_stats": result.state.batch_stats})}
  np.savez(out, **flat)
  with open(out + ".json", "w") as f:
    json.dump({"metrics": result.metrics, "devices": jax.device_count()}, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
