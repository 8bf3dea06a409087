r"""The command line of the synthetic-data stage (kdjax/generate/__init__.py):

  python -m kdjax.generate --config=configs/synth/<task>.py --workdir=synth/<task>

Bad input exits with status 2 and one line naming the fix (kdjax.cli). For several processes
pass --distributed.
"""

import os

import jax
from absl import app, flags
from ml_collections import config_flags

from kdjax import cli, runtime
from kdjax.generate import run as run_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/synth/<task>.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output: the synthetic TFDS dataset directory.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  runtime.configure(True)  # before jax starts its first backend: Eigen convolutions on CPU
  if _DISTRIBUTED.value:
    runtime.initialize_distributed()
  workdir = _WORKDIR.value
  report = run_lib.generate(_CONFIG.value, workdir)  # bad input: kdjax.cli prints one line
  if jax.process_index() == 0:
    rate = report.get("images_per_s")
    print(f"{report['num_images']} images in {workdir} ({report['generated_this_run']} generated "
          f"now{f', {rate:.3f} images/s' if rate else ''})", flush=True)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
