r"""Offline synthetic digits: a randomly initialised tiny Stable Diffusion (no network).

  python -c "from kdjax.generate import random_pipeline; \
      random_pipeline.save_random_pipeline('runs/tiny_sd')"
  python -m kdjax.generate --config=configs/synth/digits.py --workdir=runs/synth_digits \
      --config.synth.pipeline=runs/tiny_sd

Exercises the whole stage (prompts from kdjax_digits' class names, sharded jitted sampling,
resumable TFDS shards, 8x8 output like the real digits) on 2 CPU cores in about a minute. The
images are noise-like: the weights are random. Mix them into training with
`--config.data.synthetic=runs/synth_digits` (configs/demo.py).
"""

from kdjax import configlib


def get_config(arg=None):
  a = configlib.parse_arg(arg, images_per_class=8, pipeline="runs/tiny_sd")
  c = configlib.generate_base()
  c.data.name = "kdjax_digits"
  c.synth.pipeline = a.pipeline
  c.synth.revision = ""
  c.synth.dtype = "float32"  # bfloat16 matmuls are slow on CPU
  c.synth.templates = ("a handwritten digit {c}", "the number {c}")
  c.synth.resolution = 16
  c.synth.num_inference_steps = 4
  c.synth.images_per_class = a.images_per_class
  c.synth.batch_per_device = 8
  c.synth.shard_size = 32
  return c
