r"""kdjax command line: flags only.

  python -m kdjax.main --config=configs/resnet18_cifar.py --workdir=runs/r18 \
      --config.optimizer.learning_rate=0.05

The config is locked: an override of a key that does not exist fails and names the key.
A config with `teacher.adapt` (paper A: configs/resnet18_cifar.py, configs/paper_a.py) first
adapts its Hub teacher into WORKDIR/teacher, then distils from it (kdjax/train/adapt.py).
Exit status: 0 done, 2 bad input (one line naming the fix), 3 a NaN/inf loss, 143 stopped by
SIGTERM after saving a checkpoint (the same command resumes); see kdjax/errors.py.
For several processes (TPU pod slice, multi-node GPU) pass --distributed
(docs/parallelism.md).
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from kdjax import cli, runtime
from kdjax.train import adapt

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg)).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, logs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-process runs).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "The workdir holds a run of a different config: delete that run's files "
    "(checkpoints, metrics, config and records; a teacher cache is kept, and refused if made for "
    "another setup) and start again. Without it such a workdir is refused. An adapted teacher "
    "(WORKDIR/teacher, with teacher.adapt) is its own run: kept when its adaptation config is "
    "the same (finished: not trained again), deleted and adapted again only when it differs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_libraries()
  runtime.configure(_CONFIG.value.fast_cpu_convolutions)  # before the first backend starts
  if _DISTRIBUTED.value:
    runtime.initialize_distributed()
  result = adapt.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  if jax.process_index() == 0:
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
    logging.info("final: %s", shown)
    if "test/accuracy" in result.metrics:
      print(f"final test accuracy: {result.metrics['test/accuracy']:.4f} "
            f"({result.metrics['test/count']} examples)", flush=True)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
