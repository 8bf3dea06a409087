"""The Stable Diffusion pipeline: a Hub id or a local directory in the diffusers layout, checked
for the Flax weights, hashed by content (what a resumed generation must share) and loaded as
diffusers 0.39 / transformers 4.57 Flax components.

Importing this module silences those libraries' deprecation notices of their Flax classes (one
per scheduler / model construction: Flax support ends in diffusers 0.40 and transformers 5,
which is why both are pinned); their other warnings still show.
"""

import dataclasses
import hashlib
import logging as std_logging
import os
from pathlib import Path

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import transformers

from kdjax import models
from kdjax.generate.plan import GenerateError
from kdjax.hf import hub

FLAX_WEIGHTS = {"unet": "diffusion_flax_model.msgpack", "vae": "diffusion_flax_model.msgpack",
                "text_encoder": "flax_model.msgpack"}
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
             "text_encoder/flax_model.msgpack", "unet/config.json",
             "unet/diffusion_flax_model.msgpack", "vae/config.json",
             "vae/diffusion_flax_model.msgpack"]
SCHEDULERS = {"dpm_multistep": "FlaxDPMSolverMultistepScheduler", "ddim": "FlaxDDIMScheduler",
              "pndm": "FlaxPNDMScheduler"}
LAYOUT = ("a Stable Diffusion pipeline in the diffusers layout (unet/, vae/, text_encoder/, "
          "tokenizer/, scheduler/)")


class _DropDeprecation(std_logging.Filter):
  def filter(self, record):
    return "are deprecated and will be removed" not in record.getMessage()


def silence_deprecation_notices() -> None:
  """Drops diffusers' and transformers' Flax deprecation notices (and transformers' advisory
  warnings) from their log handlers; idempotent."""
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # read at each warning
  for lib in (diffusers, transformers):
    lib.utils.logging.get_logger(lib.__name__)  # makes the library's handler exist
    for handler in std_logging.getLogger(lib.__name__).handlers:
      if not any(isinstance(f, _DropDeprecation) for f in handler.filters):
        handler.addFilter(_DropDeprecation())


silence_deprecation_notices()  # every user of the Flax classes imports this module first


def resolve(source: str, revision: str | None) -> Path:
  """A local diffusers-layout directory as is; a Hub id -> its snapshot in the HF cache (only
  the Flax weights, configs, tokenizer and scheduler are fetched)."""
  include = " ".join(repr(p) for p in HUB_FILES)  # the download command's --include
  return hub.fetch_once(source, revision, what="synth.pipeline", allow_patterns=HUB_FILES,
                     include=include, local=LAYOUT,
                     local_hint=f" (no local directory {source!r} exists; check synth.pipeline "
                     "and synth.revision)", example="CompVis/stable-diffusion-v1-4")


def check_layout(directory: Path, source: str) -> None:
  """Refuses a directory without the Flax weights, the tokenizer or the scheduler config."""
  missing = [f"{part}/{name}" for part, name in FLAX_WEIGHTS.items()
             if not (directory / part / name).is_file()]
  missing += [p for p in ("tokenizer/vocab.json", "tokenizer/merges.txt",
                          "scheduler/scheduler_config.json") if not (directory / p).is_file()]
  if missing:
    torch_only = (directory / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    fix = ("it has PyTorch weights only: use a revision with Flax weights (CompVis/stable-"
           "diffusion-v1-4: 'bf16' or 'flax'), or convert it once with torch installed "
           "(diffusers' Flax{UNet2DConditionModel,AutoencoderKL}.from_pretrained(DIR, "
           "subfolder=..., from_pt=True) and transformers' FlaxCLIPTextModel, then "
           "save_pretrained into a copy of DIR)" if torch_only
           else f"pass {LAYOUT}")
    raise GenerateError(f"pipeline {source!r} at {directory} lacks {missing}: {fix}")


def pipeline_sha1(directory: Path) -> dict:
  """The pipeline by content: its Flax weights, and its configs, tokenizer and scheduler files
  (so a moved or re-downloaded copy of the same pipeline resumes a generation)."""
  weights, configs = hashlib.sha1(), hashlib.sha1()
  for part, name in sorted(FLAX_WEIGHTS.items()):
    with open(directory / part / name, "rb") as f:
      while chunk := f.read(1 << 24):
        weights.update(chunk)
  for path in sorted(p for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                     for p in (directory / part).glob("*.json")) + [
                         directory / "tokenizer" / "merges.txt"]:
    configs.update(path.relative_to(directory).as_posix().encode())
    configs.update(path.read_bytes())
  return {"weights_sha1": weights.hexdigest(), "configs_sha1": configs.hexdigest()}


@dataclasses.dataclass
class Pipeline:
  tokenizer: object
  text_encoder: object  # transformers FlaxCLIPTextModel
  unet: object
  vae: object
  scheduler: object
  params: dict  # {"text_encoder", "unet", "vae", "scheduler" (the scheduler's state)}

  @property
  def vae_scale(self) -> int:
    return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_pipeline(directory: Path, scheduler: str, dtype: str) -> Pipeline:
  """Components from a diffusers-layout directory; weights as host numpy arrays, the float ones
  cast to `dtype` (the caller places them on its mesh)."""
  if scheduler not in SCHEDULERS:
    raise GenerateError(f"unknown synth.scheduler {scheduler!r}; valid: {sorted(SCHEDULERS)}")
  if dtype not in models.DTYPES:
    raise GenerateError(f"unknown synth.dtype {dtype!r}; valid: {sorted(models.DTYPES)}")
  jdtype = jnp.dtype(models.DTYPES[dtype])
  kw = {"dtype": jdtype, "local_files_only": True}
  unet, unet_params = diffusers.FlaxUNet2DConditionModel.from_pretrained(
      directory, subfolder="unet", **kw)
  vae, vae_params = diffusers.FlaxAutoencoderKL.from_pretrained(directory, subfolder="vae", **kw)
  # _do_init=False: no random initialisation (seconds of compiling) before the weights load.
  text_encoder, text_params = transformers.FlaxCLIPTextModel.from_pretrained(
      directory / "text_encoder", _do_init=False, **kw)
  tokenizer = transformers.CLIPTokenizer.from_pretrained(directory / "tokenizer")
  # DDIM's clip_sample (default True) would clip latents to [-1, 1]: never right for SD.
  extra = {"clip_sample": False} if scheduler == "ddim" else {}
  sched, sched_state = getattr(diffusers, SCHEDULERS[scheduler]).from_pretrained(
      directory, subfolder="scheduler", local_files_only=True, **extra)

  def cast(x):  # on the host: no per-array device program
    x = np.asarray(x)
    return x.astype(jdtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # bf16 included

  params = {"text_encoder": jax.tree.map(cast, text_params),
            "unet": jax.tree.map(cast, unet_params), "vae": jax.tree.map(cast, vae_params),
            "scheduler": sched_state}
  return Pipeline(tokenizer, text_encoder, unet, vae, sched, params)


def tokenize(pipe: Pipeline, prompts) -> np.ndarray:
  """int32 [len(prompts), max_length] token ids, padded and truncated to the encoder's length."""
  tok = pipe.tokenizer
  return np.asarray(tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                        truncation=True, return_tensors="np").input_ids, np.int32)
