"""Pre-trained teachers: Hugging Face Hub vision checkpoints as Flax modules.

    from kdjax import teachers
    teacher = teachers.load("microsoft/resnet-50")        # a Hub id, or a local directory
    out = teacher(teacher.preprocess(uint8_images))       # NHWC in, dict of outputs
    out["logits"], out["pooler_output"], out["features"]

`load` resolves a Hub id through `huggingface_hub` (the HF cache, `HF_HOME`, `HF_HUB_OFFLINE`)
or takes a local directory holding config.json and model.safetensors (or a sharded
model.safetensors.index.json). The architecture is kdjax's own Flax port
(kdjax/models/teachers/), chosen by config.json's `model_type`, and the weights are converted
from the safetensors tensor names. Outputs carry the names of the HF PyTorch model's outputs and
equal them (tested on random tiny models against torch): CNN maps are NHWC, ResNet's pooled
[B, C, 1, 1] is [B, C]. `features` is the vector the model's classification head reads.

Weights load only from safetensors: a pickle checkpoint (pytorch_model.bin) can run arbitrary
code when loaded, so it is refused with the command that converts it.
"""

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import configlib, errors
from kdjax import sharding as shd
from kdjax.models.teachers import common

# config.json `model_type` -> family module in kdjax/models/teachers/ (imported on first use).
FAMILIES = {
    "resnet": "resnet",
    "vit": "vit",
    "dinov2": "vit",
    "clip": "vit",
    "clip_vision_model": "vit",
    "mobilenet_v2": "mobilenet_v2",
}
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
UNSAFE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth",
                "model.ckpt")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Only what a teacher needs: not the repo's other weight variants (fp16 copies, open_clip, ...).
HUB_FILES = ["config.json", "preprocessor_config.json", SAFETENSORS_NAME, SAFETENSORS_INDEX,
             "model-*-of-*.safetensors"]


class TeacherLoadError(errors.UserError):
  """A teacher could not be loaded; the message says how to fix it."""


# ------------------------------------------------------------------------------------ locate


def _offline() -> bool:
  from huggingface_hub import constants
  env = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
  return bool(constants.HF_HUB_OFFLINE) or env


def _download_hint(repo_id: str) -> str:
  return (f"`hf download {repo_id} --include '*.json' '*.safetensors'` on a machine with network "
          "and the same HF_HOME (or copy that cache here)")


_LOCAL_HINT = (" (no local directory of that name exists either; a teacher adapted to the task "
               "is made by `python -m kdjax.main --config=configs/adapt.py:model=<hub id>,"
               "data=<task> --workdir=<dir>`)")


def resolve(name_or_path: str, revision: str | None = None) -> Path:
  """A local directory as is; a Hub id -> its snapshot directory in the HF cache."""
  path = Path(os.path.expanduser(name_or_path))
  if path.is_dir():
    return path
  if name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1:
    raise TeacherLoadError(
        f"teacher {name_or_path!r}: no such directory; pass a directory with config.json and "
        f"{SAFETENSORS_NAME}, or a Hub id such as 'microsoft/resnet-50'")
  import huggingface_hub
  from huggingface_hub import constants, errors
  offline = _offline()
  try:
    return Path(huggingface_hub.snapshot_download(
        name_or_path, revision=revision, allow_patterns=HUB_FILES, local_files_only=offline))
  except errors.LocalEntryNotFoundError as e:
    why = ("HF_HUB_OFFLINE=1" if offline else "the Hub could not be reached")
    raise TeacherLoadError(
        f"teacher {name_or_path!r} is not in the HF cache ({constants.HF_HUB_CACHE}) and {why}: "
        f"run {_download_hint(name_or_path)}, or pass a local directory with config.json and "
        f"{SAFETENSORS_NAME}{_LOCAL_HINT}") from e
  except errors.HFValidationError as e:
    raise TeacherLoadError(
        f"teacher {name_or_path!r} is neither a directory nor a valid Hub id "
        "('org/name', e.g. 'microsoft/resnet-50')") from e
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
    raise TeacherLoadError(
        f"teacher {name_or_path!r} (revision {revision or 'main'}) is not on the Hub or is "
        "private/gated (log in with `hf auth login`); check the id or pass a local "
        f"directory{_LOCAL_HINT}") from e


def _is_hub_id(name_or_path: str) -> bool:
  return not Path(os.path.expanduser(name_or_path)).is_dir()


def _convert_hint(source: str, config: dict) -> str:
  arch = (config.get("architectures") or ["AutoModel"])[0]
  return ("python -c \"import transformers; transformers."
          f"{arch}.from_pretrained('{source}').save_pretrained('OUT_DIR', "
          "safe_serialization=True)\" and pass OUT_DIR (copy preprocessor_config.json too)")


def _hub_pickles(repo_id: str, revision: str | None) -> list[str]:
  """The pickle weight files of a Hub repo (empty when offline or unreachable)."""
  if _offline():
    return []
  import huggingface_hub
  try:
    files = huggingface_hub.list_repo_files(repo_id, revision=revision)
  except Exception:  # noqa: BLE001  (any network or Hub error: we only wanted a better message)
    return []
  return [f for f in files if f.split("/")[-1] in UNSAFE_NAMES]


def fetch_once(name_or_path: str, revision: str | None = None) -> Path:
  """`resolve` for multi-process runs: process 0 downloads into the (shared) cache while the
  others wait, then all of them resolve from it. One process: plain `resolve`."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      resolve(name_or_path, revision)
    multihost_utils.sync_global_devices(f"kdjax fetched {name_or_path}")
  return resolve(name_or_path, revision)


def weight_files(directory: Path, name: str, config: dict | None = None,
                 revision: str | None = None) -> list[Path]:
  """The safetensors files of a checkpoint directory; refuses pickles, names the fix."""
  config = config or {}
  index = directory / SAFETENSORS_INDEX
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [s for s in shards if not (directory / s).is_file()]
    if missing:
      raise TeacherLoadError(f"teacher {name!r}: {index} lists shards that are missing: "
                             f"{missing}; re-download the checkpoint")
    return [directory / s for s in shards]
  if (directory / SAFETENSORS_NAME).is_file():
    return [directory / SAFETENSORS_NAME]
  others = sorted(directory.glob("*.safetensors"))
  if len(others) == 1:
    return others
  unsafe = [n for n in UNSAFE_NAMES if (directory / n).exists()]
  if unsafe:
    raise TeacherLoadError(
        f"teacher {name!r}: refusing to load the pickle checkpoint {directory / unsafe[0]} "
        "(unpickling can run arbitrary code). Convert it once, where you trust the file: "
        + _convert_hint(str(directory), config))
  if _is_hub_id(name):
    pickles = _hub_pickles(name, revision)
    if pickles:
      raise TeacherLoadError(
          f"teacher {name!r}: the Hub repo has only pickle weights ({pickles[0]}); kdjax "
          "refuses them (unpickling can run arbitrary code). Convert it once, where you trust "
          "it: " + _convert_hint(name, config))
    raise TeacherLoadError(
        f"teacher {name!r}: its snapshot {directory} has no {SAFETENSORS_NAME} or "
        f"{SAFETENSORS_INDEX} (a partial download, or a repo without safetensors): run "
        f"{_download_hint(name)}, or pass a local directory")
  raise TeacherLoadError(f"teacher {name!r}: no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX} in "
                         f"{directory}")


# ------------------------------------------------------------------------------------ read

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}


def _header(path: Path) -> tuple[dict, int]:
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    if size <= 0 or size > 100_000_000:
      raise TeacherLoadError(f"{path} is not a safetensors file (bad header size {size})")
    header = json.loads(f.read(size))
  header.pop("__metadata__", None)
  return header, 8 + size


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """Tensors of a safetensors file as numpy arrays, memory-mapped (bf16 widened to float32)."""
  header, start = _header(path)
  data = np.memmap(path, dtype=np.uint8, mode="r")
  out = {}
  for name, info in header.items():
    begin, end = info["data_offsets"]
    if start + end > data.size:
      raise TeacherLoadError(f"{path} is truncated: tensor {name!r} ends past the file; "
                             "re-download the checkpoint")
    raw = data[start + begin:start + end].view(_ST_DTYPES[info["dtype"]])
    if info["dtype"] == "BF16":  # numpy has no bfloat16: the high half of a float32
      raw = (raw.astype(np.uint32) << 16).view(np.float32)
    out[name] = raw.reshape(info["shape"])
  return out


def read_config(directory: Path, name: str) -> dict:
  path = directory / "config.json"
  if not path.is_file():
    raise TeacherLoadError(f"teacher {name!r}: no config.json in {directory}; a teacher "
                           "directory holds config.json and model.safetensors, as "
                           "transformers' save_pretrained writes them")
  return json.loads(path.read_text())


def family_of(config: dict, name: str):
  model_type = config.get("model_type")
  if model_type not in FAMILIES:
    raise TeacherLoadError(f"teacher {name!r}: model_type {model_type!r} is not supported; "
                           f"supported: {sorted(FAMILIES)}")
  return importlib.import_module(f"kdjax.models.teachers.{FAMILIES[model_type]}")


# ------------------------------------------------------------------------------------ preprocess


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What the checkpoint's preprocessor_config.json asks for, applied in JAX."""

  resize: tuple[str, Any] | None = ("square", (224, 224))  # (square, (h, w)) | (shortest_edge, s)
  crop: tuple[int, int] | None = None
  central_fraction: float = 1.0  # first keep this central fraction (a kdjax eval view)
  resample: str = "linear"  # jax.image.resize method
  rescale: float = 1 / 255
  mean: tuple[float, ...] = (0.485, 0.456, 0.406)
  std: tuple[float, ...] = (0.229, 0.224, 0.225)

  @property
  def output_size(self) -> tuple[int, int] | None:
    if self.crop is not None:
      return self.crop
    if self.resize is not None and self.resize[0] == "square":
      return tuple(self.resize[1])
    return None

  def __call__(self, images: jax.Array) -> jax.Array:
    """uint8 (or 0-255 float) [B, H, W, 3] -> normalised float32 at the model's input size."""
    x = jnp.asarray(images, jnp.float32)
    _, h, w, c = x.shape
    if self.central_fraction < 1.0:  # as kdjax.data.augment.preprocess_eval
      ch, cw = int(round(h * self.central_fraction)), int(round(w * self.central_fraction))
      top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
      x = x[:, top:top + ch, left:left + cw]
      h, w = ch, cw
    if self.resize is not None:
      kind, size = self.resize
      if kind == "square":
        nh, nw = size
      else:  # shortest edge -> size, aspect kept (HF get_resize_output_image_size)
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        nh, nw = (size, new_long) if h <= w else (new_long, size)
      if (nh, nw) != (h, w):
        x = jax.image.resize(x, (x.shape[0], nh, nw, c), self.resample, antialias=True)
        x = jnp.clip(jnp.round(x), 0, 255)  # HF resizes uint8 images through PIL
      h, w = nh, nw
    if self.crop is not None:
      ch, cw = self.crop
      top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
      x = x[:, top:top + ch, left:left + cw]
    x = x * self.rescale
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)


_RESAMPLE = {0: "nearest", 1: "lanczos3", 2: "linear", 3: "cubic", 4: "linear", 5: "cubic"}
_SQUARE_BY_DEFAULT = ("ViT", "DeiT", "BeitImage", "Dinov2ImageProcessor")  # int size -> square


def _size(value, processor_type: str):
  if value is None:
    return None
  if isinstance(value, int):
    square = processor_type.startswith(_SQUARE_BY_DEFAULT)
    return ("square", (value, value)) if square else ("shortest_edge", value)
  if "shortest_edge" in value:
    return ("shortest_edge", int(value["shortest_edge"]))
  return ("square", (int(value["height"]), int(value["width"])))


def config_image_size(config: dict) -> int:
  """The input size in config.json (CLIPModel: its vision_config); CNN configs have none: 224."""
  return int(config.get("vision_config", config).get("image_size", 224))


def preprocessing_from(directory: Path, config: dict) -> Preprocessing:
  path = directory / "preprocessor_config.json"
  default_size = config_image_size(config)
  if not path.is_file():  # no processor file: square resize to the model's size, ImageNet stats
    return Preprocessing(resize=("square", (default_size,) * 2))
  pp = json.loads(path.read_text())
  kind = pp.get("image_processor_type") or pp.get("feature_extractor_type") or ""
  resize = _size(pp.get("size", default_size), kind) if pp.get("do_resize", True) else None
  crop = None
  if kind.startswith("ConvNext") and resize is not None and resize[0] == "shortest_edge":
    # ConvNext processors (microsoft/resnet-*): below 384 px resize the short side to
    # size / crop_pct (default 224 / 256), crop size x size; from 384 px warp to a square.
    # Other processors ignore a crop_pct key (some Hub configs carry a stale one).
    size = resize[1]
    if size < 384:
      crop_pct = pp.get("crop_pct") or 224 / 256
      resize, crop = ("shortest_edge", int(size / crop_pct)), (size, size)
    else:
      resize = ("square", (size, size))
  elif pp.get("do_center_crop", False) and pp.get("crop_size") is not None:
    crop_size = pp["crop_size"]
    crop = ((crop_size, crop_size) if isinstance(crop_size, int)
            else (int(crop_size["height"]), int(crop_size["width"])))
  mean = tuple(pp.get("image_mean", (0.5, 0.5, 0.5))) if pp.get("do_normalize", True) else (0.,) * 3
  std = tuple(pp.get("image_std", (0.5, 0.5, 0.5))) if pp.get("do_normalize", True) else (1.,) * 3
  rescale = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
  return Preprocessing(resize=resize, crop=crop, resample=_RESAMPLE[int(pp.get("resample", 2))],
                       rescale=rescale, mean=mean, std=std)


def preprocessing_of(name_or_path: str, revision: str | None = None) -> Preprocessing:
  """The preprocessing of a Hub id or directory, without reading its weights."""
  directory = resolve(name_or_path, revision)
  return preprocessing_from(directory, read_config(directory, name_or_path))


# ------------------------------------------------------------------------------------ teacher


@dataclasses.dataclass
class Teacher:
  """A loaded teacher: `teacher(pixels)` runs the jitted forward pass on its variables."""

  name: str
  directory: Path
  config: dict
  module: flax.linen.Module
  variables: Any
  preprocess: Preprocessing
  _forward: Callable | None = dataclasses.field(default=None, repr=False)

  @property
  def image_size(self) -> tuple[int, int]:
    """The input size the checkpoint was trained at (after preprocessing)."""
    return self.preprocess.output_size or (config_image_size(self.config),) * 2

  def apply(self, variables, pixels: jax.Array, train: bool = False) -> dict:
    """The pure forward function, for use inside other jitted steps: an output dict with at
    least "features" (what a head reads) and, with a head, "logits"."""
    out = self.module.apply(variables, pixels, train=train)
    if isinstance(out, tuple):  # a kdjax student (a teacher trained by a kdjax run)
      logits, out = out
      out = {**out, "logits": logits, "features": out["pre_logits"]}
    return out

  def __call__(self, pixels: jax.Array) -> dict:
    if self._forward is None:
      self._forward = jax.jit(self.apply)
    return self._forward(self.variables, pixels)


def _flat(tree) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_and_fill(name, variables, abstract, tensors: common.Tensors, new_head: bool) -> dict:
  """Fails naming every unused tensor, missing or mis-shaped weight; zero-fills a new head."""
  have, want = _flat(variables), _flat(abstract)
  problems = []
  if tensors.unused():
    problems.append(f"tensors not used by the converter: {tensors.unused()[:10]}")
  unexpected = sorted(set(have) - set(want))
  if unexpected:
    problems.append(f"converted weights the model does not have: {unexpected[:10]}")
  missing = sorted(k for k in set(want) - set(have)
                   if not (new_head and k.startswith("params/classifier/")))
  if missing:
    problems.append(f"weights missing from the checkpoint: {missing[:10]}")
  shapes = sorted(f"{k}: checkpoint {tuple(have[k].shape)} vs model {tuple(want[k].shape)}"
                  for k in set(have) & set(want) if tuple(have[k].shape) != tuple(want[k].shape))
  if shapes:
    problems.append(f"shape mismatches: {shapes[:10]}")
  if problems:
    raise TeacherLoadError(f"teacher {name!r} does not match its config.json: "
                           + "; ".join(problems))
  filled = {k: have.get(k, np.zeros(want[k].shape, np.float32)) for k in want}
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in filled.items()})


def load(name_or_path: str, *, dtype="float32", num_classes: int | None = None,
         revision: str | None = None, mesh: jax.sharding.Mesh | None = None,
         param_sharding: str = "replicate", fsdp_min_size: int = shd.FSDP_MIN_SIZE,
         conv_impl: str = "auto", on_host: bool = False) -> Teacher:
  """Loads a teacher from a Hub id or a local directory.

  dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
  num_classes: None keeps the checkpoint's head (if any); 0 drops it; n > 0 adds a new,
    zero-initialised head "classifier" with n classes (e.g. for a linear probe).
  mesh / param_sharding: place the parameters on `mesh` replicated ("replicate") or split
    over its data axis ("fsdp", for teachers too large to replicate; arrays smaller than
    `fsdp_min_size` values stay replicated); None: default device.
  conv_impl: convolutions of CNN families, as `model.conv_impl` ("auto": kdjax's CPU
    convolution on CPU, XLA's elsewhere; kdjax/models/cpu_conv.py).
  on_host: keep the variables as numpy arrays, for a caller that places them itself (the
    trainer: each device then only ever receives its shard).
  A kdjax run directory that adapted a teacher (configs/adapt.py) loads as that teacher.
  On GPU, XLA computes float32 matmuls in TF32 by default; for float32 exactly as torch's,
  set JAX_DEFAULT_MATMUL_PRECISION=highest.
  """
  directory = resolve(name_or_path, revision)
  if (directory / "checkpoints").is_dir() and (directory / "config.json").is_file():
    if num_classes is not None:
      raise TeacherLoadError(f"{directory} is an adapted teacher: its head is the task's; "
                             "num_classes cannot change it")
    return load_adapted(directory, dtype=dtype, mesh=mesh, param_sharding=param_sharding,
                        fsdp_min_size=fsdp_min_size, conv_impl=conv_impl, on_host=on_host)
  config = read_config(directory, name_or_path)
  family = family_of(config, name_or_path)
  files = weight_files(directory, name_or_path, config, revision)
  arrays = {}
  for f in files:
    arrays.update(read_safetensors(f))
  head_keys = {k for k in arrays if k.split(".")[0] == "classifier"}
  if num_classes is not None:  # the checkpoint's head is not used: hide it from the family
    arrays = {k: v for k, v in arrays.items() if k not in head_keys}
  module = family.build(config, frozenset(arrays), dtype=DTYPES[str(dtype)] if isinstance(
      dtype, str) else dtype, num_classes=num_classes or None)
  if hasattr(module, "conv"):
    from kdjax import models  # late: kdjax.models imports this module's users
    module = module.clone(conv=models.conv_function(conv_impl))
  tensors = common.Tensors(arrays, getattr(family, "PREFIXES", ()))
  variables = family.convert(tensors, module)
  preprocess = preprocessing_from(directory, config)
  size = preprocess.output_size or (config_image_size(config),) * 2
  abstract = jax.eval_shape(module.init, jax.random.key(0),
                            jnp.zeros((1, *size, 3), jnp.float32))
  variables = _check_and_fill(name_or_path, variables, abstract, tensors,
                              new_head=bool(num_classes))
  variables = _place(variables, mesh, param_sharding, fsdp_min_size, on_host)
  return Teacher(name=name_or_path, directory=directory, config=config, module=module,
                 variables=variables, preprocess=preprocess)


def _place(variables, mesh, param_sharding, fsdp_min_size, on_host):
  variables = jax.tree.map(lambda x: np.ascontiguousarray(x, np.float32), variables)
  if on_host:
    return variables
  if mesh is None:
    return jax.device_put(variables)
  return shd.put_global(variables, shd.param_shardings(variables, mesh, param_sharding,
                                                       fsdp_min_size))


def source_record(name_or_path: str, directory: Path) -> dict:
  """Where a pre-trained model came from (`directory`: what `resolve` gave for it), precisely
  enough to load the same weights later: a Hub id with the snapshot's commit, or a local
  directory's absolute path."""
  directory = Path(directory)
  if _is_hub_id(name_or_path):
    commit = directory.name if directory.parent.name == "snapshots" else None
    return {"source": name_or_path, "hub": True, "revision": commit}
  return {"source": str(directory.resolve()), "hub": False, "revision": None}


def load_adapted(workdir, *, dtype="float32", mesh=None, param_sharding="replicate",
                 fsdp_min_size: int = shd.FSDP_MIN_SIZE, conv_impl: str = "auto",
                 on_host: bool = False) -> Teacher:
  """A teacher adapted to a task by a kdjax run (linear probe or fine-tune; configs/adapt.py).

  The run recorded its pre-trained source (pretrained.json: the Hub commit or the absolute
  directory), so the head meets the exact backbone it was trained on. Its latest checkpoint
  holds the new head (and, after a fine-tune, the backbone), read as host arrays whatever
  devices wrote it. `out["logits"]` are the task's classes; `preprocess` gives the run's eval
  view (central crop, resize, the run's normalisation).
  """
  from kdjax import checkpoint, steps
  from kdjax.models import hub

  workdir = Path(workdir)
  run = json.loads((workdir / "config.json").read_text())
  record_path = workdir / "pretrained.json"
  if record_path.is_file():
    record = json.loads(record_path.read_text())
  else:
    record = {"source": run.get("model", {}).get("pretrained"), "revision": None}
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), max_to_keep=1_000_000,
                                 read_only=True)  # the run may still be training
  step = ckpt.latest_step()
  if step is None:
    ckpt.close()
    raise TeacherLoadError(f"{workdir} has no finished checkpoint yet: run the adaptation "
                           f"(python -m kdjax.main --config=... --workdir={workdir}) first")
  state = ckpt.restore_numpy(step)
  ckpt.close()
  size = int(run["data"]["image_size"])
  preprocess = Preprocessing(resize=("square", (size, size)), crop=None,
                             central_fraction=float(run["data"].get("eval_crop_fraction", 1.0)),
                             mean=tuple(run["data"]["mean"]), std=tuple(run["data"]["std"]))
  if not record["source"]:  # a kdjax student trained from scratch, as a teacher
    return _run_teacher(workdir, run, state, preprocess, dtype, mesh, param_sharding,
                        fsdp_min_size, conv_impl, on_host)
  base = load(record["source"], dtype=dtype, num_classes=0, revision=record.get("revision"),
              conv_impl=conv_impl, on_host=True)
  variables = steps.merge(hub.backbone_variables(base.variables), dict(state["params"]),
                          dict(state["batch_stats"] or {}))
  num_classes = variables["params"]["classifier"]["kernel"].shape[-1]
  module = hub.HubClassifier(base.module, num_classes, frozen=True, return_dict=True)
  variables = _place(variables, mesh, param_sharding, fsdp_min_size, on_host)
  return Teacher(name=str(workdir), directory=workdir, config=base.config, module=module,
                 variables=variables, preprocess=preprocess)


def _run_teacher(workdir: Path, run: dict, state: dict, preprocess: Preprocessing, dtype, mesh,
                 param_sharding, fsdp_min_size, conv_impl, on_host) -> Teacher:
  """A kdjax run of a student from scratch (e.g. a larger network trained on more data) as a
  teacher: the network of its config.json with its latest parameters, in eval mode."""
  import ml_collections

  from kdjax import models

  # keys added to kdjax after the run was made take their defaults
  model_cfg = ml_collections.ConfigDict({**configlib.base().model.to_dict(), **run["model"]})
  model_cfg.dtype = dtype if isinstance(dtype, str) else jnp.dtype(dtype).name
  model_cfg.conv_impl = conv_impl
  params = dict(state["params"])
  head = "classifier" if model_cfg.hub_config else "head"  # a Hub architecture's HubClassifier
  if head not in params:
    raise TeacherLoadError(f"{workdir}: cannot find the classifier head of model "
                           f"{model_cfg.name!r} in its checkpoint")
  num_classes = int(params[head]["kernel"].shape[-1])
  hf_config = (json.loads((workdir / "hf_config.json").read_text()) if model_cfg.hub_config
               else None)
  model, _ = models.build(model_cfg, num_classes, hf_config=hf_config)
  variables = {"params": params, "batch_stats": dict(state["batch_stats"] or {})}
  variables = _place(variables, mesh, param_sharding, fsdp_min_size, on_host)
  config = {"model_type": "kdjax", "image_size": preprocess.resize[1][0]}
  return Teacher(name=str(workdir), directory=workdir, config=config, module=model,
                 variables=variables, preprocess=preprocess)
