"""kdjax: distil a pre-trained Hugging Face teacher into a small student, in JAX.

The package's layers, lowest first; a module imports only its own layer and lower ones, at
module top (tests/test_layering.py checks it):
  errors
  files, image_ops, sharding, runtime, stats, configlib, cli, checkpoint, preemption, metric_writers
  models (students, Flax ports of HF families), steps, optim
  hf (Hub, safetensors, preprocessing, pre-trained models)
  data, losses
  distill (objective, teacher views and loading, the teacher cache, reports)
  evaluators, validate
  train (trainer, loop, workdir, accounting, adapt)
  export, generate (the diffusion stage), main, tools (bench, torch reference, cost, demo,
  transfer)
"""
