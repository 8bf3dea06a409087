r"""Trains a small text-conditioned latent diffusion pipeline of Stable Diffusion's architecture
on a corpus (kdjax/generate/train.py), resumable, and writes WORKDIR/pipeline: a diffusers-layout
directory that `python -m kdjax.generate` loads as it loads SD v1.4.

  python experiments/train_tiny_diffusion.py --config=configs/synth/tiny_diffusion.py \
      --workdir=runs/tiny_diffusion

Killed and restarted with the same command, it resumes from the last checkpoint of its stage
(vae, unet) and ends with the same weights as an uninterrupted run; a finished workdir is read
back. Prints the report's figures (losses, FLOPs, seconds).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# after the path: the script runs from a checkout
from kdjax import cli, metric_writers, runtime  # noqa: E402
from kdjax.generate import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/synth/tiny_diffusion.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, report.json and pipeline/.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_libraries()
  runtime.configure(True)
  report = train.train(_CONFIG.value, _WORKDIR.value)
  last = {stage: report[stage]["history"][-1] for stage in train.STAGES}
  print(f"generator in {report['pipeline']}: vae reconstruction MSE "
        f"{last['vae']['recon_mse']:.4f}, unet denoising MSE {last['unet']['mse']:.4f}; "
        f"{report['flops']:.3g} FLOPs, {metric_writers.hms(report['wall_time_s'])} of training",
        flush=True)


if __name__ == "__main__":
  cli.run(main)
