r"""kdjax command line: flags only.

  python -m kdjax.main --config=configs/resnet18_cifar.py --workdir=runs/r18 \
      --config.optimizer.learning_rate=0.05

The config is locked: an override of a key that does not exist fails and names the key.
For several processes (TPU pod slice, multi-node GPU) pass --distributed (see README).
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config(arg)).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, logs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-process runs).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from kdjax import runtime

  runtime.configure(_CONFIG.value.fast_cpu_convolutions)
  import jax  # only now: XLA reads XLA_FLAGS when the first backend starts

  if _DISTRIBUTED.value:
    runtime.initialize_distributed()
  from kdjax import teachers, train

  try:
    result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except teachers.TeacherLoadError as e:  # the message names the fix: no traceback needed
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
    logging.info("final: %s", shown)
    if "test/accuracy" in result.metrics:
      print(f"final test accuracy: {result.metrics['test/accuracy']:.4f} "
            f"({result.metrics['test/count']} examples)", flush=True)


def run():
  try:
    app.run(main)
  except (KeyError, AttributeError) as e:
    # ml_collections reports a mistyped --config.x override as one of these, before main runs.
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(msg))
      e = e.args[0]
    message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    print(f"config error: no such key {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
