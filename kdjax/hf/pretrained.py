"""Pre-trained models as Flax modules: a Hugging Face checkpoint (Hub id or directory), or a
kdjax run directory (an adapted teacher, a student trained from scratch).

    from kdjax.hf import pretrained
    teacher = pretrained.load("microsoft/resnet-50")            # a Hub id, or a local directory
    out = teacher(teacher.preprocess(uint8_images))       # NHWC in, dict of outputs
    out["logits"], out["pooler_output"], out["features"]

The architecture is kdjax's own Flax port (kdjax/models/hf/), chosen by config.json's
`model_type`, and the weights are converted from the safetensors tensor names. Outputs carry the
names of the HF PyTorch model's outputs and equal them (tested on random tiny models against
torch): CNN maps are NHWC, ResNet's pooled [B, C, 1, 1] is [B, C]. `features` is the vector the
model's classification head reads. Weights load only from safetensors: a pickle checkpoint can
run arbitrary code when loaded, so it is refused with the command that converts it.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import checkpoint, configlib, models, steps
from kdjax import sharding as shd
from kdjax.errors import TeacherLoadError, UserError
from kdjax.hf.hub import read_config, resolve
from kdjax.hf.preprocessing import Preprocessing, config_image_size, preprocessing_from
from kdjax.hf.safetensors import read_safetensors, weight_files
from kdjax.models.hf import classifier, common


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
  family = models.family_of(config, name_or_path)
  files = weight_files(directory, name_or_path, config, revision)
  arrays = {}
  for f in files:
    arrays.update(read_safetensors(f))
  head_keys = {k for k in arrays if k.split(".")[0] == "classifier"}
  if num_classes is not None:  # the checkpoint's head is not used: hide it from the family
    arrays = {k: v for k, v in arrays.items() if k not in head_keys}
  module = family.build(config, frozenset(arrays), dtype=models.DTYPES[str(dtype)] if isinstance(
      dtype, str) else dtype, num_classes=num_classes or None)
  if hasattr(module, "conv"):
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
  variables = steps.merge(classifier.backbone_variables(base.variables), dict(state["params"]),
                          dict(state["batch_stats"] or {}))
  num_classes = variables["params"]["classifier"]["kernel"].shape[-1]
  module = classifier.HubClassifier(base.module, num_classes, frozen=True, return_dict=True)
  variables = _place(variables, mesh, param_sharding, fsdp_min_size, on_host)
  return Teacher(name=str(workdir), directory=workdir, config=base.config, module=module,
                 variables=variables, preprocess=preprocess)


def _run_teacher(workdir: Path, run: dict, state: dict, preprocess: Preprocessing, dtype, mesh,
                 param_sharding, fsdp_min_size, conv_impl, on_host) -> Teacher:
  """A kdjax run of a student from scratch (e.g. a larger network trained on more data) as a
  teacher: the network of its config.json with its latest parameters, in eval mode."""
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
  model = models.build(model_cfg, num_classes, hf_config)
  variables = {"params": params, "batch_stats": dict(state["batch_stats"] or {})}
  variables = _place(variables, mesh, param_sharding, fsdp_min_size, on_host)
  config = {"model_type": "kdjax", "image_size": preprocess.resize[1][0]}
  return Teacher(name=str(workdir), directory=workdir, config=config, module=model,
                 variables=variables, preprocess=preprocess)


def pretrained_student(cfg, num_classes: int, source=None):
  """(HubClassifier, pre-trained variables {"params": {"backbone": ...}, ...} as host numpy
  arrays) for a `config.model` with `pretrained` set; the trainer places them on its mesh.
  `source`: the directory that cfg.pretrained already resolved to (the Hub is not asked again)."""
  teacher = load(str(source or cfg.pretrained), dtype=models.DTYPES[cfg.dtype], num_classes=0,
                 conv_impl=cfg.conv_impl, on_host=True)
  checks = classifier.ARCHITECTURE_CHECKS
  if cfg.name != "hub" and not checks.get(cfg.name, lambda c: False)(teacher.config):
    matching = sorted(k for k, check in checks.items() if check(teacher.config))
    raise UserError(
        f"model.pretrained={cfg.pretrained!r} (model_type "
        f"{teacher.config.get('model_type')!r}) is not a {cfg.name!r}; set model.name to "
        f"'hub' (architecture from the checkpoint) or to one of {matching}")
  backbone = teacher.module
  if getattr(backbone, "bn_momentum", 0.9) < 0.5:
    # HF's MobileNetV2 passes TF-slim's decay 0.997 as torch's momentum, so its running
    # statistics would follow the last batch. Trained here, it gets TF-slim's decay.
    backbone = backbone.clone(bn_momentum=0.997)
  model = classifier.HubClassifier(
      backbone, num_classes, frozen=cfg.freeze_backbone,
      dropout_rate=cfg.dropout_rate if cfg.name == "mobilenet_v2" else 0.0)
  return model, classifier.backbone_variables(teacher.variables)


def build_model(cfg, num_classes: int, directory=None, hf_config: dict | None = None):
  """(model, pre-trained host variables or None) for `config.model`: with `pretrained` (a Hub id
  or directory) the checkpoint's architecture and weights; with `hub_config` that Hugging Face
  architecture, randomly initialised; otherwise the student `name`, randomly initialised.
  `directory`: what `pretrained` / `hub_config` already resolved to; `hf_config`: `hub_config`'s
  config.json, already read (a run's hf_config.json)."""
  if cfg.pretrained:
    models.check(cfg)
    return pretrained_student(cfg, num_classes, directory)
  if cfg.hub_config and hf_config is None:
    hf_config = read_config(directory or resolve(cfg.hub_config), cfg.hub_config)
  return models.build(cfg, num_classes, hf_config), None
