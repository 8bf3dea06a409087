r"""Synthetic training images from Stable Diffusion, written as a TFDS dataset (paper A).

  python -m kdjax.generate --config=configs/synth/dtd.py --workdir=synth/dtd
  python -m kdjax.main --config=configs/paper_a.py:task=dtd --workdir=runs/dtd \
      --config.data.synthetic=synth/dtd

Farhat & Chen (arXiv 2404.03263) rescue data-limited tasks by adding images that Stable
Diffusion v1.4 draws from plain prompts ("{c} texture" for DTD, "a picture of a {c}" for
Caltech-101, "the inside of a {c}" for MIT Indoor-67), 1x or 2x the real training set,
concatenated with the real data. This package is that pre-computed stage:

- Prompts come from a per-task template and the ClassLabel names of the real TFDS dataset, so
  labels line up by construction. Image k of the plan is the i-th image of class c (classes
  interleaved, so every shard holds every class); its seed is a pure function of (synth.seed, k).
- The pipeline is diffusers 0.39.0's Flax Stable Diffusion (UNet, VAE, CLIP text encoder from
  transformers 4.57.6, the last releases with Flax classes) with our own sampling loop: one
  `jax.jit` over a global batch sharded on the mesh's data axis (each device its own prompts and
  seeds; no pmap), classifier-free guidance, the scheduler's steps in a `fori_loop`, VAE decode,
  an antialiased resize to the real dataset's resolution and the uint8 rounding, all on device.
- Output: a TFDS dataset directory (array_record shards, DatasetInfo with the real dataset's
  ClassLabel names, per-image `prompt`, `seed` and plan `index`), read by
  `tfds.builder_from_directory(WORKDIR)` / kdjax's `data.synthetic`.
- Resumable: shards are written under a unique temporary name and renamed when complete; a
  restarted run keeps the finished shards and generates only the missing ones (no image twice,
  none lost); the dataset's metadata (dataset_info.json, what makes the directory a TFDS dataset)
  is written last, so a partial run is never readable as a dataset. A different setup in the same
  workdir is refused.

Modules, one job each (import the one you need; importing this package imports nothing):

  plan             which images: class names and counts from the real dataset, prompts, seeds
  pipeline         the Stable Diffusion pipeline: Hub id or directory, its layout, its content
                   hash, its Flax components (diffusers / transformers, deprecation notices off)
  sampler          the jitted, sharded sampling function and its FLOP count
  shards           the TFDS output: features, array_record shards, the dataset's metadata
  run              one generation: the spec check, resumption, batches to shards, the report
  random_pipeline  a randomly initialised pipeline for tests and offline runs (no network)
  train            training a small pipeline of that layout on a labelled corpus (offline:
                   experiments/train_tiny_diffusion.py, the transfer miniature's generator)
  quality          how a classifier run reads a synthetic set (class fidelity); a grid image
  __main__         the command line (`python -m kdjax.generate`)
"""
