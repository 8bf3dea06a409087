r"""The transfer miniature's generator: a small text-conditioned latent diffusion pipeline of
Stable Diffusion's architecture (diffusers' Flax VAE and UNet, a frozen random CLIP text
encoder, SD v1's noise schedule) trained on the pre-training corpus P (kdjax_mnist5k) only,
captioned from P's class names ("a handwritten digit 7", "the number 7").

  python experiments/train_tiny_diffusion.py --config=configs/synth/tiny_diffusion.py \
      --workdir=runs/tiny_diffusion
  python -m kdjax.generate --config=configs/synth/digits.py:pipeline=runs/tiny_diffusion/pipeline \
      --workdir=runs/synth_digits

The sizes, the captions and the sampling settings: kdjax/tools/transfer.py (GENERATOR,
SYNTH_TEMPLATES, SYNTH_SAMPLING), which runs this training as the miniature's `generator` stage.
Arguments: `seed`, `runlocal` (a few steps).
"""

from kdjax.tools import transfer


def get_config(arg=None):
  return transfer.generator_config(arg)
