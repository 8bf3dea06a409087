r"""Randomly initialised Stable Diffusion pipelines in the diffusers layout, written without
network (a byte-level tokenizer vocabulary made here): `tiny` for tests and offline runs
(configs/synth/digits.py), `sd-v1` with the real architecture for throughput measurements
(experiments/benchmark_generate.py).

  python -c "from kdjax.generate import random_pipeline; \
      random_pipeline.save_random_pipeline('runs/tiny_sd')"
"""

import json
from pathlib import Path

import diffusers
import flax
import jax
import numpy as np
import transformers
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from kdjax import files
from kdjax.generate import pipeline

ARCHITECTURES = {
    # For tests and offline runs: 16 px images from 8x8 latents, ~0.08 GFLOP per UNet step.
    "tiny": {"unet": dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                          attention_head_dim=8, cross_attention_dim=32),
             "vae": dict(block_out_channels=(32, 32), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16),
             "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=24, projection_dim=32),
             "max_length": 24, "vocab_size": None},
    # Stable Diffusion v1's shapes (UNet 860M, VAE 84M, CLIP ViT-L/14 text 123M parameters).
    "sd-v1": {"unet": dict(sample_size=64, cross_attention_dim=768),
              "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                          down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512),
              "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, max_position_embeddings=77,
                           projection_dim=768, hidden_act="quick_gelu"),
              "max_length": 77, "vocab_size": 49408},
}


# Stable Diffusion v1's noise schedule (CompVis/stable-diffusion-v1-4 scheduler_config.json):
# what the pipelines written here sample with and what kdjax.generate.train trains on.
SD_V1_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1)


def _random_params(init, seed: int):
  """Parameters of init's shapes drawn on the host (no compilation of the init function): norm
  scales 1, biases 0, other arrays normal(0, 1/fan_in) so activations stay O(1)."""
  shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.eval_shape(init)))
  rng = np.random.default_rng(seed)
  out = {}
  for path, leaf in sorted(shapes.items()):
    if path[-1] == "scale":
      out[path] = np.ones(leaf.shape, leaf.dtype)
    elif path[-1] == "bias":
      out[path] = np.zeros(leaf.shape, leaf.dtype)
    else:
      fan_in = int(np.prod(leaf.shape[:-1])) or 1
      out[path] = (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
  return flax.traverse_util.unflatten_dict(out)


def modules(spec: dict, vocab_size: int):
  """(FlaxCLIPTextModel, FlaxUNet2DConditionModel, FlaxAutoencoderKL) of architecture `spec`
  (an ARCHITECTURES entry; `vae` may carry the latents' scaling_factor), text tokens 0..vocab-1
  with the byte-level vocabulary's special tokens last."""
  text_config = transformers.CLIPTextConfig(
      vocab_size=spec["vocab_size"] or vocab_size, bos_token_id=vocab_size - 2,
      eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, **spec["text"])
  return (transformers.FlaxCLIPTextModel(text_config, _do_init=False),
          diffusers.FlaxUNet2DConditionModel(**spec["unet"]),
          diffusers.FlaxAutoencoderKL(**spec["vae"]))


def byte_vocab() -> dict:
  """Every byte as a token (any prompt tokenizes, character by character), then BOS and EOS."""
  chars = list(bytes_to_unicode().values())
  return {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars]
                                     + ["<|startoftext|>", "<|endoftext|>"])}


def random_text_params(text, max_length: int, seed: int):
  """The text encoder's random weights: a pure function of `seed` (host numpy, no compile)."""
  return _random_params(lambda: text.init_weights(jax.random.key(seed), (1, max_length)), seed)


def save_random_pipeline(directory, arch: str = "tiny", seed: int = 0, spec: dict | None = None,
                         params: dict | None = None) -> Path:
  """A Stable Diffusion pipeline in the diffusers layout (what `synth.pipeline` reads), with a
  byte-level tokenizer vocabulary written here: no network. `tiny` for tests; `sd-v1` has the
  real architecture (for throughput measurements). `spec` replaces ARCHITECTURES[arch];
  `params` ({"unet", "vae", "text_encoder"}, any of them) replaces the random weights of those
  parts, `spec["prediction_type"]` the UNet's output (epsilon; v_prediction as SD 2), written
  into the scheduler's config (kdjax.generate.train writes a trained pipeline this way)."""
  spec = spec or ARCHITECTURES[arch]
  params = params or {}
  out = Path(directory)
  (out / "tokenizer").mkdir(parents=True, exist_ok=True)
  vocab = byte_vocab()
  files.write_text(out / "tokenizer" / "vocab.json", json.dumps(vocab))
  files.write_text(out / "tokenizer" / "merges.txt", "#version: 0.2\n")
  tokenizer = transformers.CLIPTokenizer(str(out / "tokenizer" / "vocab.json"),
                                         str(out / "tokenizer" / "merges.txt"),
                                         model_max_length=spec["max_length"])
  tokenizer.save_pretrained(out / "tokenizer")
  text, unet, vae = modules(spec, len(vocab))
  key = jax.random.key(seed)
  text.save_pretrained(out / "text_encoder", params=params.get("text_encoder") or
                       random_text_params(text, spec["max_length"], seed))
  unet.save_pretrained(out / "unet", params=params.get("unet") or _random_params(
      lambda: unet.init_weights(key), seed + 1))
  vae.save_pretrained(out / "vae", params=params.get("vae") or _random_params(
      lambda: vae.init_weights(key), seed + 2))
  # Stable Diffusion v1's noise schedule (its scheduler_config.json).
  diffusers.FlaxPNDMScheduler(**SD_V1_SCHEDULE, prediction_type=spec.get(
      "prediction_type", "epsilon")).save_pretrained(out / "scheduler")
  files.write_json(out / "model_index.json", {
      "_class_name": "FlaxStableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
      "scheduler": ["diffusers", "FlaxPNDMScheduler"], "text_encoder": ["transformers",
                                                                       "FlaxCLIPTextModel"],
      "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers",
                                                                "FlaxUNet2DConditionModel"],
      "vae": ["diffusers", "FlaxAutoencoderKL"]})
  pipeline.check_layout(out, str(out))  # what synth.pipeline needs is all there
  return out
