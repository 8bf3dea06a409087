r"""Synthetic training images from Stable Diffusion, written as a TFDS dataset (paper A).

  python -m kdjax.generate --config=configs/synth/dtd.py --workdir=synth/dtd
  python -m kdjax.main --config=configs/paper_a.py:task=dtd --workdir=runs/dtd \
      --config.data.synthetic=synth/dtd

Farhat & Chen (arXiv 2404.03263) rescue data-limited tasks by adding images that Stable
Diffusion v1.4 draws from plain prompts ("{c} texture" for DTD, "a picture of a {c}" for
Caltech-101, "the inside of a {c}" for MIT Indoor-67), 1x or 2x the real training set,
concatenated with the real data. This module is that pre-computed stage:

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
"""

import dataclasses
import hashlib
import json
import logging as std_logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from kdjax import cli, errors, metric_writers, runtime
from kdjax import sharding as shd
from kdjax import steps as steps_lib
from kdjax.data import sources
from kdjax.hf import hub

SPEC_FILE = "generate.json"
SPLIT = "train"
FLAX_WEIGHTS = {"unet": "diffusion_flax_model.msgpack", "vae": "diffusion_flax_model.msgpack",
                "text_encoder": "flax_model.msgpack"}
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
             "text_encoder/flax_model.msgpack", "unet/config.json",
             "unet/diffusion_flax_model.msgpack", "vae/config.json",
             "vae/diffusion_flax_model.msgpack"]
SCHEDULERS = {"dpm_multistep": "FlaxDPMSolverMultistepScheduler", "ddim": "FlaxDDIMScheduler",
              "pndm": "FlaxPNDMScheduler"}


class GenerateError(errors.UserError):
  """Generation cannot start or resume; the message says how to fix it."""


# ---------------------------------------------------------------------------------- libraries


class _DropDeprecation(std_logging.Filter):
  def filter(self, record):
    return "are deprecated and will be removed" not in record.getMessage()


def import_diffusers():
  """Imports diffusers' and transformers' Flax classes with their deprecation notices silenced
  (one per scheduler / model construction: Flax support ends in diffusers 0.40 and
  transformers 5, which is why both are pinned). Other warnings still show."""
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  import diffusers
  import transformers
  for lib in (diffusers, transformers):
    lib.utils.logging.get_logger(lib.__name__)  # makes the library's handler exist
    for handler in std_logging.getLogger(lib.__name__).handlers:
      if not any(isinstance(f, _DropDeprecation) for f in handler.filters):
        handler.addFilter(_DropDeprecation())
  return diffusers, transformers


# ---------------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
  """Every image to generate, in order: label, prompt and seed of image k."""

  labels: np.ndarray  # int32 [N]
  prompts: list
  seeds: np.ndarray  # int64 [N]: jax.random.key(seed) draws the image's initial latents

  def __len__(self):
    return len(self.labels)

  def sha1(self) -> str:
    h = hashlib.sha1(self.labels.tobytes())
    h.update(self.seeds.tobytes())
    h.update("\n".join(self.prompts).encode())
    return h.hexdigest()


def prompt_name(class_name: str, rename: dict) -> str:
  """A ClassLabel name as prompt words: explicit renames first, then '_' and '-' as spaces."""
  if class_name in rename:
    return rename[class_name]
  return re.sub(r"[_\-]+", " ", class_name).strip()


def image_seed(base_seed: int, index: int) -> int:
  """The seed of plan image `index`: independent streams per (base_seed, index), 31 bits."""
  return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def make_plan(class_names, counts, templates, seed: int, rename: dict) -> Plan:
  """Classes interleaved: image k is the i-th of class c, for i = 0, 1, ... while c has some
  left. Class c's i-th image uses template i mod len(templates)."""
  counts = np.asarray(counts, np.int64)
  labels, prompts = [], []
  for i in range(int(counts.max(initial=0))):
    for c in np.flatnonzero(counts > i):
      labels.append(int(c))
      template = templates[i % len(templates)]
      prompts.append(template.format(c=prompt_name(class_names[c], rename)))
  seeds = np.asarray([image_seed(seed, k) for k in range(len(labels))], np.int64)
  return Plan(np.asarray(labels, np.int32), prompts, seeds)


def parse_rename(items) -> dict:
  out = {}
  for item in items:
    name, sep, words = item.partition("=")
    if not sep:
      raise GenerateError(f"synth.rename item {item!r}: write it as 'class_name=prompt words'")
    out[name.strip()] = words.strip()
  return out


def real_dataset(config):
  """(class names, per-class training counts or None, image size) of the real dataset: the
  same selection (data.val_fraction, n_per_class, fraction) the trainer will use."""

  builder = sources.dataset_builder(config.data)
  if not builder.is_prepared():  # e.g. cifar100's names are read from its files at preparation
    raise GenerateError(
        f"dataset {config.data.name!r} is not prepared under "
        f"{config.data.data_dir or '$TFDS_DATA_DIR (~/tensorflow_datasets)'}: prompts use its "
        "ClassLabel names (and synth.multiple its class counts), so prepare it first: "
        f"`tfds build {config.data.name} --file_format=array_record` (needs tensorflow-cpu "
        "and network once; README 'Data'), or set data.data_dir")
  label = builder.info.features["label"]
  names = [n for n in label.names if n not in config.data.exclude_classes]  # as the trainer
  shape = builder.info.features["image"].shape
  size = shape[0] if shape[0] and shape[0] == shape[1] else None
  counts = None
  if config.synth.multiple:
    src = sources.open_source(config.data, config.data.train_split)
    labels = src.labels()
    d = config.data
    if d.val_fraction > 0 or d.n_per_class or d.fraction:
      rows, _ = sources.split_train_val(labels, d, d.subset_seed)
      labels = labels[rows]
    counts = np.bincount(labels, minlength=len(names))
  return names, counts, size


def class_counts(config, names, real_counts) -> np.ndarray:
  s = config.synth
  if bool(s.images_per_class) == bool(s.multiple):
    raise GenerateError("set exactly one of synth.images_per_class (images per class) and "
                        "synth.multiple (x the real training set of each class, e.g. 1 or 2)")
  if s.images_per_class:
    counts = np.full(len(names), int(s.images_per_class), np.int64)
  else:
    counts = np.round(np.asarray(real_counts, np.float64) * s.multiple).astype(np.int64)
  unknown = sorted(set(s.exclude_classes) - set(names))
  if unknown:
    raise GenerateError(f"synth.exclude_classes {unknown} are not classes of {config.data.name} "
                        f"(its classes: {names[:12]}{' ...' if len(names) > 12 else ''})")
  for name in s.exclude_classes:
    counts[names.index(name)] = 0
  unknown = sorted(set(parse_rename(s.rename)) - set(names))
  if unknown:
    raise GenerateError(f"synth.rename names {unknown}, not classes of {config.data.name} "
                        f"(its classes: {names[:12]}{' ...' if len(names) > 12 else ''})")
  return counts


# ------------------------------------------------------------------------------ the pipeline


def resolve(source: str, revision: str | None) -> Path:
  """A local diffusers-layout directory as is; a Hub id -> its snapshot in the HF cache (only
  the Flax weights, configs, tokenizer and scheduler are fetched)."""

  path = Path(os.path.expanduser(source))
  if path.is_dir():
    return path
  if source.startswith((".", "/", "~")) or source.count("/") != 1:
    raise GenerateError(f"synth.pipeline {source!r}: no such directory; pass a Stable "
                        "Diffusion directory in the diffusers layout (unet/, vae/, "
                        "text_encoder/, tokenizer/, scheduler/) or a Hub id such as "
                        "'CompVis/stable-diffusion-v1-4'")
  import huggingface_hub
  from huggingface_hub import constants, errors
  offline = hub.offline()
  rev = f" --revision {revision}" if revision else ""
  hint = (f"`hf download {source}{rev} --include {' '.join(repr(p) for p in HUB_FILES)}` on a "
          "machine with network and the same HF_HOME (or copy that cache here), or pass a local "
          "directory")
  try:
    return Path(huggingface_hub.snapshot_download(source, revision=revision,
                                                  allow_patterns=HUB_FILES,
                                                  local_files_only=offline))
  except errors.LocalEntryNotFoundError as e:
    why = "HF_HUB_OFFLINE=1" if offline else "the Hub could not be reached"
    raise GenerateError(f"pipeline {source!r} (revision {revision or 'main'}) is not in the HF "
                        f"cache ({constants.HF_HUB_CACHE}) and {why}, and no local directory "
                        f"{str(path)!r} exists: run {hint}") from e
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
          errors.HFValidationError) as e:
    raise GenerateError(f"pipeline {source!r} (revision {revision or 'main'}) is neither a local "
                        f"directory ({str(path)!r} does not exist) nor on the Hub (or it is "
                        "gated: accept its licence and `hf auth login`); check the path, the id "
                        "and synth.revision") from e


def check_layout(directory: Path, source: str) -> None:
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
           else "pass a Stable Diffusion directory in the diffusers layout")
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
  import jax
  import jax.numpy as jnp

  diffusers, transformers = import_diffusers()
  if scheduler not in SCHEDULERS:
    raise GenerateError(f"unknown synth.scheduler {scheduler!r}; valid: {sorted(SCHEDULERS)}")
  if dtype not in ("float32", "bfloat16"):
    raise GenerateError(f"unknown synth.dtype {dtype!r}; valid: ['bfloat16', 'float32']")
  jdtype = jnp.dtype(dtype)
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
  tok = pipe.tokenizer
  return np.asarray(tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                        truncation=True, return_tensors="np").input_ids, np.int32)


def make_sampler(pipe: Pipeline, synth, out_size: int, count_trips: int | None = None):
  """f(params, prompt_ids [B,L], negative_ids [1,L], seeds [B]) -> uint8 images [B,S,S,3].

  Pure and jittable: the initial latents of image b are normal(key(seeds[b])), so an image
  depends on its own seed and prompt (up to float rounding, which can differ with the batch
  size, dtype and device). The loop runs over all of the scheduler's timesteps (PNDM without
  its PRK steps has num_inference_steps + 1, as diffusers' PyTorch pipeline runs them).
  `count_trips`: run only that many steps, as straight-line code: for counting FLOPs
  (`sampler_flops`), since XLA's cost analysis counts a loop's body once."""
  import jax
  import jax.numpy as jnp

  res, steps, guidance = synth.resolution, synth.num_inference_steps, synth.guidance_scale
  multiple = pipe.vae_scale * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
  if res % multiple:
    raise GenerateError(f"synth.resolution={res} must be a multiple of {multiple} (the VAE's "
                        "and the UNet's downsampling)")
  latent_shape = (pipe.unet.config.in_channels, res // pipe.vae_scale, res // pipe.vae_scale)
  cfg_guidance = guidance > 1.0  # classifier-free guidance: a conditional and an empty prompt
  scaling = pipe.vae.config.scaling_factor
  sched = pipe.scheduler

  def pairs(x):  # [B, 2, ...] -> [2B, ...]: example b's two rows stay on b's device
    return x.reshape((-1,) + x.shape[2:])

  def sample(params, ids, negative_ids, seeds):
    encode = lambda t: pipe.text_encoder(t, params=params["text_encoder"])[0]  # noqa: E731
    context = encode(ids)
    batch = ids.shape[0]
    if cfg_guidance:  # rows 2b, 2b+1: example b unconditional, conditional
      negative = jnp.broadcast_to(encode(negative_ids), context.shape)
      context = pairs(jnp.stack([negative, context], axis=1))
    latents = jax.vmap(lambda s: jax.random.normal(jax.random.key(s), latent_shape))(seeds)
    state = sched.set_timesteps(params["scheduler"], num_inference_steps=steps,
                                shape=latents.shape)
    latents = latents * state.init_noise_sigma

    def body(i, carry):
      latents, state = carry
      t = jnp.asarray(state.timesteps, jnp.int32)[i]
      x = pairs(jnp.stack([latents, latents], axis=1)) if cfg_guidance else latents
      x = sched.scale_model_input(state, x, t)
      eps = pipe.unet.apply({"params": params["unet"]}, x,
                            jnp.full((x.shape[0],), t, jnp.int32),
                            encoder_hidden_states=context).sample.astype(jnp.float32)
      if cfg_guidance:
        eps = eps.reshape((batch, 2) + eps.shape[1:])
        uncond, cond = eps[:, 0], eps[:, 1]
        eps = uncond + guidance * (cond - uncond)
      latents, state = sched.step(state, eps, t, latents).to_tuple()
      return latents, state

    if count_trips is None:
      latents, _ = jax.lax.fori_loop(0, state.timesteps.shape[0], body, (latents, state))
    else:
      for i in range(count_trips):
        latents, state = body(i, (latents, state))
    image = pipe.vae.apply({"params": params["vae"]}, latents / scaling,
                           method=pipe.vae.decode).sample
    image = jnp.transpose(image.astype(jnp.float32) / 2 + 0.5, (0, 2, 3, 1))
    if out_size != res:  # match the real dataset: antialiased (area-averaging) downsampling
      image = jax.image.resize(image, (batch, out_size, out_size, 3), synth.resize_method,
                               antialias=True)
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)

  return sample


def sharded_sampler(pipe: Pipeline, synth, out_size: int, mesh):
  """(jitted sampler, its params on `mesh`): prompts, seeds and images sharded on the data axis,
  params and the negative prompt replicated. Params are placed from host copies (a committed
  single-device array could not be device_put onto a multi-process sharding)."""
  import jax


  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  host = jax.tree.map(np.asarray, pipe.params)
  params = shd.put_global(host, jax.tree.map(lambda _: repl, host))
  sampler = jax.jit(make_sampler(pipe, synth, out_size),
                    in_shardings=(repl, batch_sh, repl, batch_sh), out_shardings=batch_sh)
  return sampler, params


def num_trips(pipe: Pipeline, synth) -> int:
  """How many UNet steps the sampler runs (the scheduler's timesteps)."""
  state = pipe.scheduler.set_timesteps(pipe.params["scheduler"], synth.num_inference_steps,
                                       (1, 4, 8, 8))
  return int(state.timesteps.shape[0])


def sampler_flops(pipe: Pipeline, synth, out_size: int, *args) -> float:
  """XLA's FLOPs of one sampler call on `args` (arrays or ShapeDtypeStructs): the programs with
  one and two straight-line steps are lowered (not compiled) and extrapolated to every step."""
  import jax


  one, two = (steps_lib.xla_flops(jax.jit(make_sampler(pipe, synth, out_size, count_trips=k)),
                                  *args) for k in (1, 2))
  return one + (num_trips(pipe, synth) - 1) * (two - one)


# ---------------------------------------------------------------------------------- the output


def dataset_name(real_name: str) -> str:
  return "kdjax_synth_" + re.sub(r"[^a-z0-9]+", "_", real_name.lower()).strip("_")


def features(class_names, size: int, encoding: str):
  import tensorflow_datasets as tfds

  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(size, size, 3), encoding_format=encoding),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "prompt": tfds.features.Text(),
      "seed": tfds.features.Scalar(dtype=np.int64),
      "index": tfds.features.Scalar(dtype=np.int64),
  })


class ShardWriter:
  """TFDS array_record shards `<name>-train.array_record-0000i-of-0000n` in `directory`.

  A shard is written under a unique temporary name and renamed when complete (rename is atomic
  on one filesystem): a killed run leaves either the whole shard or only a temporary file."""

  def __init__(self, directory: Path, name: str, num_shards: int, feats, encoding: str,
               jpeg_quality: int):
    from tensorflow_datasets.core import example_serializer

    self.directory, self.name, self.num_shards = directory, name, num_shards
    self.features, self.encoding, self.quality = feats, encoding, jpeg_quality
    self.serializer = example_serializer.ExampleSerializer(feats.get_serialized_info())

  def path(self, i: int) -> Path:
    return self.directory / (f"{self.name}-{SPLIT}.array_record-"
                             f"{i:05d}-of-{self.num_shards:05d}")

  def complete(self, i: int, expected: int) -> bool:
    from array_record.python import array_record_module

    path = self.path(i)
    if not path.is_file():
      return False
    try:
      reader = array_record_module.ArrayRecordReader(str(path))
      n = reader.num_records()
      reader.close()
    except Exception:  # noqa: BLE001  (unreadable: generated again)
      n = -1
    if n != expected:
      std_logging.getLogger(__name__).warning(
          "shard %s has %d of %d records: generating it again", path.name, n, expected)
      return False
    return True

  def _encoded(self, image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    if self.encoding == "jpeg":
      Image.fromarray(image).save(buf, format="JPEG", quality=self.quality)
    else:
      Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()

  def write(self, i: int, examples: list) -> None:
    from array_record.python import array_record_module

    tmp = self.path(i).with_name(f".{self.path(i).name}.tmp-{uuid.uuid4().hex[:8]}")
    writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")
    for ex in examples:
      ex = dict(ex, image=self._encoded(ex["image"]))
      writer.write(self.serializer.serialize_example(self.features.encode_example(ex)))
    writer.close()
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, self.path(i))

  def finalize(self, shard_lengths, description: str, metadata: dict) -> None:
    """Writes the TFDS metadata; dataset_info.json (which makes the directory a dataset) last."""
    import tensorflow_datasets as tfds
    from etils import epath
    from tensorflow_datasets.core import dataset_info, file_adapters, naming, splits

    template = naming.ShardedFileTemplate(
        data_dir=epath.Path(self.directory), template=naming.DEFAULT_FILENAME_TEMPLATE,
        dataset_name=self.name, split=SPLIT, filetype_suffix="array_record")
    identity = dataset_info.DatasetIdentity(name=self.name, version=tfds.core.Version("1.0.0"),
                                            data_dir=str(self.directory), module_name="")
    info = dataset_info.DatasetInfo(builder=identity, features=self.features,
                                    description=description,
                                    metadata=tfds.core.MetadataDict(metadata))
    info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
    num_bytes = sum(self.path(i).stat().st_size for i in range(self.num_shards))
    info.set_splits(splits.SplitDict([splits.SplitInfo(
        name=SPLIT, shard_lengths=[int(n) for n in shard_lengths], num_bytes=num_bytes,
        filename_template=template)]))
    staging = self.directory / f".metadata-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    info.write_to_directory(staging)
    names = sorted(p.name for p in staging.iterdir())
    for n in [n for n in names if n != "dataset_info.json"] + ["dataset_info.json"]:
      os.replace(staging / n, self.directory / n)
    shutil.rmtree(staging)


# ---------------------------------------------------------------------------------- the run


def _json(obj):
  return json.loads(json.dumps(obj))


def spec_of(config, pipeline: dict, plan: Plan, names, counts, real_counts,
            out_size: int) -> dict:
  """Everything that decides the images (not the batch size or the device count). Keys with a
  leading '_' are provenance, not compared on resume (a moved copy of the same pipeline)."""
  s = config.synth
  return _json({
      "format": 1,
      "pipeline": {k: v for k, v in pipeline.items() if k.endswith("sha1")},
      "_pipeline_source": {k: v for k, v in pipeline.items() if not k.endswith("sha1")},
      "dtype": s.dtype, "scheduler": s.scheduler, "num_inference_steps": s.num_inference_steps,
      "guidance_scale": s.guidance_scale, "negative_prompt": s.negative_prompt,
      "resolution": s.resolution, "image_size": out_size, "resize_method": s.resize_method,
      "encoding": s.encoding, "jpeg_quality": s.jpeg_quality if s.encoding == "jpeg" else None,
      "templates": list(s.templates), "seed": s.seed, "shard_size": s.shard_size,
      "real_dataset": config.data.name, "class_names": list(names),
      "counts": [int(c) for c in counts], "num_images": len(plan), "plan_sha1": plan.sha1(),
      # synth.multiple: the real per-class training counts it multiplied (the trainer warns
      # when its own selection differs)
      "multiple": s.multiple or None,
      "real_counts": None if real_counts is None else [int(c) for c in real_counts],
  })


def _check_spec(workdir: Path, want: dict) -> None:
  path = workdir / SPEC_FILE
  if path.exists():
    have = json.loads(path.read_text())
    diff = sorted(k for k in set(have) | set(want)
                  if not k.startswith("_") and have.get(k) != want.get(k))
    if diff:
      raise GenerateError(
          f"{workdir} holds a generation with a different setup (differs in {diff}); use a new "
          "--workdir, or delete this one to start over. Finished shards are only reused for "
          "the identical setup.")
    return
  tmp = path.with_name(f".{SPEC_FILE}.tmp-{uuid.uuid4().hex[:8]}")
  tmp.write_text(json.dumps(want, indent=2))
  os.replace(tmp, path)


def _from_process_0(value):
  """`value` as process 0 has it (every process calls this at the same point)."""
  import jax
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def generate(config, workdir: str) -> dict:
  """Runs (or resumes) the generation; returns the run's report (also in WORKDIR/report.json)."""
  import jax
  from absl import logging


  s = config.synth
  work = Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  if s.encoding not in ("png", "jpeg"):
    raise GenerateError(f"unknown synth.encoding {s.encoding!r}; valid: ['jpeg', 'png']")
  if not s.templates or any("{c}" not in t for t in s.templates):
    raise GenerateError(f"synth.templates {tuple(s.templates)} must each contain '{{c}}' (the "
                        "class name), e.g. ('a picture of a {c}',)")
  names, real_counts, real_size = real_dataset(config)
  counts = class_counts(config, names, real_counts)
  plan = make_plan(names, counts, tuple(s.templates), s.seed, parse_rename(s.rename))
  if not len(plan):
    raise GenerateError("the plan is empty: no class gets an image")
  out_size = s.image_size or real_size or s.resolution

  directory = resolve(s.pipeline, s.revision or None)
  check_layout(directory, s.pipeline)
  # Process 0 alone touches the directory (a shared filesystem in multi-process runs) and hashes
  # the pipeline for the spec; the others follow its decisions.
  refused, spec = None, None
  if jax.process_index() == 0:
    try:
      spec = spec_of(config, {"source": s.pipeline, "revision": s.revision or None,
                              **pipeline_sha1(directory)}, plan, names, counts, real_counts,
                     out_size)
      _check_spec(work, spec)  # first: a refused (or mistyped) workdir is left untouched
      for stale in work.glob(".*.tmp-*"):  # a killed run's unfinished file: never in the set
        stale.unlink(missing_ok=True)
      for stale in work.glob(".metadata-*"):
        shutil.rmtree(stale, ignore_errors=True)
    except Exception as e:  # noqa: BLE001  (told to the other processes, then raised)
      refused = e
  if not _from_process_0(refused is None):
    raise refused or GenerateError(f"process 0 could not start in {workdir}: see its log")

  shard_size = int(s.shard_size)
  num_shards = -(-len(plan) // shard_size)
  lengths = [min(shard_size, len(plan) - i * shard_size) for i in range(num_shards)]
  name = dataset_name(config.data.name)
  feats = features(names, out_size, s.encoding)
  writer = ShardWriter(work, name, num_shards, feats, s.encoding, s.jpeg_quality)
  todo = np.zeros(num_shards, bool)
  if jax.process_index() == 0:
    todo = np.asarray([not writer.complete(i, lengths[i]) for i in range(num_shards)])
    if todo.any():  # a finished set being repaired is no dataset until it is whole again
      (work / "dataset_info.json").unlink(missing_ok=True)
  todo = _from_process_0(todo)
  todo_images = np.concatenate([np.arange(i * shard_size, i * shard_size + lengths[i])
                                for i in np.flatnonzero(todo)] or [np.zeros(0, np.int64)])
  logging.info("plan: %d images of %d classes (%s), %d shards, %d done, %d images to generate",
               len(plan), int((counts > 0).sum()), config.data.name, num_shards,
               num_shards - int(todo.sum()), len(todo_images))

  mesh = shd.make_mesh()
  global_batch = int(s.batch_per_device) * mesh.devices.size
  logging.info("sampling: global batch %d on %d devices (%d processes)", global_batch,
               mesh.devices.size, jax.process_count())
  report = {"num_images": len(plan), "num_shards": num_shards, "image_size": out_size,
            "resolution": s.resolution, "global_batch": global_batch,
            "devices": mesh.devices.size, "platform": jax.devices()[0].platform,
            "generated_this_run": int(len(todo_images))}
  if len(todo_images):
    pipe = load_pipeline(directory, s.scheduler, s.dtype)
    repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
    sampler, params = sharded_sampler(pipe, s, out_size, mesh)
    ids = tokenize(pipe, plan.prompts)
    negative = tokenize(pipe, [s.negative_prompt])
    negative = shd.global_from_host(negative, repl)
    seeds = plan.seeds.astype(np.int32)

    def launch(b):
      pos = todo_images[b * global_batch:(b + 1) * global_batch]
      pad = np.resize(pos, global_batch)  # the last batch repeats images; extras are dropped
      put = lambda x: shd.global_from_host(x, batch_sh)  # noqa: E731
      return pos, sampler(params, put(ids[pad]), negative, put(seeds[pad]))

    num_batches = -(-len(todo_images) // global_batch)
    abstract = lambda *shape: jax.ShapeDtypeStruct(shape, np.int32, sharding=batch_sh)  # noqa
    report["flops_per_image"] = sampler_flops(
        pipe, s, out_size, params, abstract(global_batch, ids.shape[1]), negative,
        abstract(global_batch)) / global_batch
    # Test hook: seconds to sleep after each batch, so a test can kill a run part-way.
    throttle = float(os.environ.get("KDJAX_GENERATE_THROTTLE_S", "0") or 0)
    pending = {}  # shard -> {plan index: image}
    start = time.perf_counter()
    timed_from, timed_images = None, 0
    nxt = launch(0)
    for b in range(num_batches):
      pos, images = nxt
      if b + 1 < num_batches:
        nxt = launch(b + 1)  # dispatched before this batch is read back: the device stays busy
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        images = multihost_utils.process_allgather(images, tiled=True)
      images = np.asarray(images)[:len(pos)]
      now = time.perf_counter()
      if timed_from is None:  # the first batch includes compilation: throughput starts after
        timed_from, report["first_batch_s"] = now, now - start
      else:
        timed_images += len(pos)
      for k, image in zip(pos, images):
        shard = int(k) // shard_size
        pending.setdefault(shard, {})[int(k)] = image
        if len(pending[shard]) == lengths[shard]:
          done = pending.pop(shard)
          if jax.process_index() == 0:
            writer.write(shard, [{"image": done[j], "label": int(plan.labels[j]),
                                  "prompt": plan.prompts[j], "seed": int(plan.seeds[j]),
                                  "index": j} for j in sorted(done)])
      if throttle:
        time.sleep(throttle)
      made = min((b + 1) * global_batch, len(todo_images))
      rate = timed_images / (now - timed_from) if timed_images else 0.0
      eta = (len(todo_images) - made) / rate if rate else float("nan")
      logging.info("generated %d/%d images (%.3f images/s, ETA %s)", made, len(todo_images),
                   rate, metric_writers._hms(eta) if rate else "?")
    report["wall_time_s"] = time.perf_counter() - start
    if timed_images:
      report["images_per_s"] = timed_images / (time.perf_counter() - timed_from)
  if jax.process_index() == 0:
    writer.finalize(lengths, description=(
        f"Synthetic images for {config.data.name} from {s.pipeline} (kdjax.generate): "
        f"{len(plan)} images, templates {list(s.templates)}."), metadata=spec)
    (work / "report.json").write_text(json.dumps(report, indent=2))
  return report


# ------------------------------------------------------------------ random pipelines (offline)

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


def _random_params(init, seed: int):
  """Parameters of init's shapes drawn on the host (no compilation of the init function): norm
  scales 1, biases 0, other arrays normal(0, 1/fan_in) so activations stay O(1)."""
  import flax
  import jax

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


def save_random_pipeline(directory, arch: str = "tiny", seed: int = 0) -> Path:
  """A randomly initialised Stable Diffusion pipeline in the diffusers layout (what
  `synth.pipeline` reads), with a byte-level tokenizer vocabulary written here: no network.
  `tiny` for tests; `sd-v1` has the real architecture (for throughput measurements)."""
  import jax

  diffusers, transformers = import_diffusers()
  from transformers.models.clip.tokenization_clip import bytes_to_unicode

  spec = ARCHITECTURES[arch]
  out = Path(directory)
  (out / "tokenizer").mkdir(parents=True, exist_ok=True)
  chars = list(bytes_to_unicode().values())  # every byte: any prompt tokenizes, char by char
  vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars]
                                      + ["<|startoftext|>", "<|endoftext|>"])}
  (out / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
  (out / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
  tokenizer = transformers.CLIPTokenizer(str(out / "tokenizer" / "vocab.json"),
                                         str(out / "tokenizer" / "merges.txt"),
                                         model_max_length=spec["max_length"])
  tokenizer.save_pretrained(out / "tokenizer")
  text_config = transformers.CLIPTextConfig(
      vocab_size=spec["vocab_size"] or len(vocab), bos_token_id=vocab["<|startoftext|>"],
      eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], **spec["text"])
  key = jax.random.key(seed)
  text = transformers.FlaxCLIPTextModel(text_config, _do_init=False)
  text.save_pretrained(out / "text_encoder", params=_random_params(
      lambda: text.init_weights(key, (1, spec["max_length"])), seed))
  unet = diffusers.FlaxUNet2DConditionModel(**spec["unet"])
  unet.save_pretrained(out / "unet", params=_random_params(lambda: unet.init_weights(key),
                                                           seed + 1))
  vae = diffusers.FlaxAutoencoderKL(**spec["vae"])
  vae.save_pretrained(out / "vae", params=_random_params(lambda: vae.init_weights(key),
                                                         seed + 2))
  # Stable Diffusion v1's noise schedule (its scheduler_config.json).
  diffusers.FlaxPNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1).save_pretrained(
                                  out / "scheduler")
  (out / "model_index.json").write_text(json.dumps({
      "_class_name": "FlaxStableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
      "scheduler": ["diffusers", "FlaxPNDMScheduler"], "text_encoder": ["transformers",
                                                                       "FlaxCLIPTextModel"],
      "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers",
                                                                "FlaxUNet2DConditionModel"],
      "vae": ["diffusers", "FlaxAutoencoderKL"]}, indent=2))
  return out


# -------------------------------------------------------------------------------------- CLI


def main(argv):
  from absl import flags

  del argv
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  report = generate(config, workdir)  # bad input: kdjax.cli prints one line, exits 2
  import jax
  if jax.process_index() == 0:
    rate = report.get("images_per_s")
    print(f"{report['num_images']} images in {workdir} ({report['generated_this_run']} generated "
          f"now{f', {rate:.3f} images/s' if rate else ''})", flush=True)


def run():
  from absl import app, flags
  from ml_collections import config_flags


  config_flags.DEFINE_config_file("config", None, "configs/synth/<task>.py", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output: the synthetic TFDS dataset directory.")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first.")
  flags.mark_flags_as_required(["config", "workdir"])

  def start(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runtime.configure(True)  # before jax starts: Eigen convolutions on CPU (runtime.py)
    if flags.FLAGS.distributed:
      runtime.initialize_distributed()
    main(argv)

  cli.run(start)


if __name__ == "__main__":
  run()
