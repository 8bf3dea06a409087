"""`--format=hf`: a kdjax run as a Hugging Face checkpoint directory, wherever transformers has
the run's architecture.

Exportable runs:
- a Hub architecture (`hf_config.json` in the run): trained from scratch from a config
  (`model.name=hub`, `model.hub_config`) or started from a checkpoint (`model.pretrained`: a
  fine-tune, or a linear probe whose frozen backbone is written with the trained head); the
  family's `hf_export` (kdjax/models/hf/) says which transformers class holds it;
- kdjax's own students where transformers defines the same network: ResNet-18/34 with the
  ImageNet stem (`model.stem=imagenet`, as ResNetForImageClassification, layer_type basic) and
  MobileNetV2 without CIFAR strides (`model.cifar_strides=False`, as
  MobileNetV2ForImageClassification with symmetric padding and torch's batch-norm epsilon).
Anything else (the CIFAR-stem ResNet, the CIFAR benchmark networks) has no transformers
architecture: the error names the formats that export it (stablehlo, onnx).

The output holds what `save_pretrained` writes and every loader reads:
- config.json: the architecture, with the task's class names as `id2label`;
- model.safetensors: the weights under transformers' names, float32;
- preprocessor_config.json: the run's eval view (resize to `data.image_size`, the run's
  normalisation);
- kdjax_export.json: what it came from (record.py).
`transformers.AutoModelForImageClassification.from_pretrained(DIR)` (PyTorch) gives the run's
logits (tested <= 1e-4) and `kdjax.hf.pretrained.load(DIR)` loads it like any Hub checkpoint: this
is how a network trained by kdjax is published as a teacher or a pre-trained student.

The weights are mapped without a second, hand-written converter: the family's import converter
(`convert`, which only moves, transposes, reshapes and concatenates tensors) is run on
tensors holding their own element indices, which says where every element of the Flax
variables came from; export writes each element back there. A converter that computed
anything would fail that check, loudly. A kdjax student is first renamed onto the family's Flax
module (`student_as_hub`, shapes checked), then written the same way.
"""

import json
from pathlib import Path

import flax
import numpy as np
import safetensors.numpy  # a transformers dependency: no torch needed
from absl import logging

from kdjax import errors, models
from kdjax.export import record as records
from kdjax.hf import hub, pretrained
from kdjax.models.hf import common
from kdjax.models.hf import mobilenet_v2 as hf_mobilenet_v2
from kdjax.models.hf import resnet as hf_resnet

# Exact float32 indices: a tensor with more elements cannot be traced.
_MAX_TRACEABLE = 2**24


def _flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(k): np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def _float_names(layout: dict) -> list[str]:
  """The float tensors of `layout`, in order: what `trace` indexes."""
  return [n for n, (_, dtype) in layout.items() if dtype == "float32"]


def trace(family, hf_config: dict, layout: dict) -> tuple[dict, set[str]]:
  """({Flax variable path ("params/.../kernel") -> (tensor index into `_float_names(layout)`,
  element index in that tensor), both arrays of the variable's shape}, the float tensors the
  converter skips on purpose): where `family.convert` takes every element of the variables
  from. A skipped tensor (DINOv2's mask token, which no classifier reads) is in none of them:
  `hf_tensors` writes it as 0."""
  names = _float_names(layout)
  index = {n: i for i, n in enumerate(names)}
  module = family.build(hf_config, frozenset(layout), num_classes=None)
  skipped = set()

  def run(fill):
    arrays = {n: (fill(index[n], shape) if dtype == "float32"
                  else np.zeros(shape, dtype)) for n, (shape, dtype) in layout.items()}
    tensors = common.Tensors(arrays, getattr(family, "PREFIXES", ()))
    variables = family.convert(tensors, module)
    unused_float = [n for n in tensors.unused() if layout[n][1] == "float32"]
    if unused_float:
      raise errors.UserError(f"export: the converter does not read {unused_float[:5]}")
    skipped.update(n for n in tensors.skipped() if layout[n][1] == "float32")
    return _flat(variables)

  too_big = [n for n in names if np.prod(layout[n][0], dtype=np.int64) > _MAX_TRACEABLE]
  if too_big:
    raise errors.UserError(f"export: tensors {too_big[:3]} have more than 2**24 elements")
  which = run(lambda i, shape: np.full(shape, i, np.float32))
  where = run(lambda i, shape: np.arange(np.prod(shape, dtype=np.int64), dtype=np.float32)
              .reshape(shape))
  return {k: (which[k].astype(np.int64), where[k].astype(np.int64)) for k in which}, skipped


def hf_tensors(family, hf_config: dict, layout: dict, variables) -> dict[str, np.ndarray]:
  """The Flax `variables` of `family`'s module with a head (built from `hf_config`) as the
  tensors of `layout`, each float element written exactly once, except the tensors the converter
  skips on purpose, which are 0 (DINOv2's mask token); integer buffers (batch norm's
  num_batches_tracked) are 0."""
  paths, skipped = trace(family, hf_config, layout)
  have = _flat(variables)
  if set(have) != set(paths):
    raise errors.UserError(
        "export: the run's variables do not match the Hugging Face architecture: missing "
        f"{sorted(set(paths) - set(have))[:5]}, unexpected {sorted(set(have) - set(paths))[:5]}")
  names = _float_names(layout)
  out = {n: np.zeros(shape, dtype) for n, (shape, dtype) in layout.items()}
  written = {n: np.zeros(layout[n][0], np.int64) for n in names}
  for path, (which, where) in paths.items():
    value = np.asarray(have[path], np.float32)
    if value.shape != which.shape:
      raise errors.UserError(f"export: {path} has shape {value.shape}, the architecture "
                             f"{which.shape}")
    for t in np.unique(which):
      mask = which == t
      out[names[t]].reshape(-1)[where[mask]] = value[mask]
      np.add.at(written[names[t]].reshape(-1), where[mask], 1)
  bad = [n for n, count in written.items()
         if not (np.all(count == 0) if n in skipped else np.all(count == 1))]
  if bad:
    raise errors.UserError(f"export: the converter does not map {bad[:5]} one to one")
  return out


def _check_image_size(hf_config: dict, size: int) -> None:
  """Fails on a ViT or CLIP run at another size than its config's (transformers' classifiers of
  these do not resize their position embeddings; DINOv2's do)."""
  kind = hf_config.get("model_type")
  vision = (hf_config.get("vision_config") or {}) if kind == "clip" else hf_config
  default = {"vit": 224, "clip": 224, "clip_vision_model": 224}.get(kind)
  if default is not None and int(vision.get("image_size", default)) != size:
    raise errors.UserError(
        f"the run's {kind} works at data.image_size={size} px, its config at "
        f"{vision.get('image_size', default)} px: export needs them equal (position embeddings "
        "are stored at the config's size); train at the config's size, or export with "
        f"{common.OTHER_FORMATS}")


def _classifier_config(architecture: str, hf_config: dict, names: list[str]) -> dict:
  """The exported config.json: `architecture` with a head over the classes `names`."""
  config = {**hf_config, "architectures": [architecture],
            "id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)}, "torch_dtype": "float32"}
  config.pop("num_labels", None)
  return config


def _classifier_variables(teacher_variables) -> dict:
  """The run's backbone and head (a HubClassifier, as loaded) as the Flax variables of the
  family's module with a head (what the family's `hf_export` takes)."""
  params = teacher_variables["params"]
  stats = teacher_variables.get("batch_stats") or {}
  variables = {"params": {**params["backbone"], "classifier": params["classifier"]}}
  if stats:
    variables["batch_stats"] = stats["backbone"]
  return variables


def _processor(data: dict) -> dict:
  """preprocessor_config.json: the run's eval view (`data` of its config) in an HF image
  processor."""
  size = int(data["image_size"])
  fraction = float(data.get("eval_crop_fraction", 1.0))
  processor = {"do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
               "do_normalize": True, "image_mean": list(data["mean"]),
               "image_std": list(data["std"])}
  if fraction == 1.0:  # the eval view: the whole image resized to size x size
    processor.update(image_processor_type="ViTImageProcessor",
                     size={"height": size, "width": size})
  elif size < 384:  # central crop of `fraction`: HF's nearest equivalent resizes, then crops
    processor.update(image_processor_type="ConvNextImageProcessor",
                     size={"shortest_edge": size}, crop_pct=fraction)
  else:
    raise errors.UserError(
        f"the run's eval view crops the central {fraction:g} at {size} px: Hugging Face image "
        "processors crop only below 384 px, so the exported view would differ")
  return processor


def _rename(variables: dict, rename) -> dict:
  """Every leaf of every collection moved to `rename(path)` (a tuple of keys)."""
  out = {}
  for kind, tree in variables.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    out[kind] = flax.traverse_util.unflatten_dict({rename(k): v for k, v in flat.items()})
  return out


def _resnet_path(path: tuple) -> tuple:
  """kdjax's ResNet student -> HF's Flax ResNet (kdjax/models/hf/resnet.py)."""
  layers = {"conv1": ("layer0", "conv"), "bn1": ("layer0", "bn"), "conv2": ("layer1", "conv"),
            "bn2": ("layer1", "bn"), "downsample_conv": ("shortcut", "conv"),
            "downsample_bn": ("shortcut", "bn")}
  top, *rest = path
  if top in ("stem_conv", "stem_bn"):
    return ("embedder", top[5:], *rest)
  if top == "head":
    return ("classifier", *rest)
  stage, block = (int(x) for x in top[len("stage"):].split("_block"))
  return (f"stages_{stage - 1}_layers_{block - 1}", *layers[rest[0]], *rest[1:])


def _mobilenet_path(order: dict):
  """kdjax's MobileNetV2 student -> HF's Flax MobileNetV2 (kdjax/models/hf/mobilenet_v2.py):
  the first inverted residual (expansion 1) is HF's stem; `order`: block name -> HF layer."""
  parts = {"expand": "expand_1x1", "depthwise": "conv_3x3", "project": "reduce_1x1"}
  inner = {"conv": "convolution", "bn": "normalization"}

  def rename(path: tuple) -> tuple:
    top, *rest = path
    if top == "head":
      return ("classifier", *rest)
    if top == "stem":
      return ("conv_stem", "first_conv", inner[rest[0]], *rest[1:])
    if top == "last_conv":
      return ("conv_1x1", inner[rest[0]], *rest[1:])
    layer = order[top]
    prefix = ("conv_stem",) if layer is None else (f"layer_{layer}",)
    return (*prefix, parts[rest[0]], inner[rest[1]], *rest[2:])

  return rename


def student_as_hub(model: dict, image_size: int, variables: dict) -> tuple:
  """(family, HF config.json, the family's Flax variables with a head) of a kdjax student run
  (`model`: its config.model) whose network transformers defines; otherwise a UserError naming
  the formats that export it."""
  name = model["name"]
  if name in ("resnet18", "resnet34") and model.get("stem") == "imagenet":
    w = int(model.get("width", 64))
    config = {"model_type": "resnet", "layer_type": "basic", "num_channels": 3,
              "embedding_size": w, "hidden_sizes": [w, 2 * w, 4 * w, 8 * w],
              "depths": [2, 2, 2, 2] if name == "resnet18" else [3, 4, 6, 3],
              "hidden_act": "relu", "downsample_in_first_stage": False,
              "downsample_in_bottleneck": False}
    return hf_resnet, config, _rename(variables, _resnet_path)
  if name == "mobilenet_v2" and not model.get("cifar_strides", True):
    blocks = sorted({k for k in variables["params"] if k.startswith("stage")},
                    key=lambda k: tuple(int(x) for x in k[len("stage"):].split("_block")))
    order = {b: (None if i == 0 else i - 1) for i, b in enumerate(blocks)}
    config = {"model_type": "mobilenet_v2", "num_channels": 3, "image_size": image_size,
              "depth_multiplier": float(model.get("width_multiplier", 1.0)),
              "depth_divisible_by": 8, "min_depth": 8, "expand_ratio": 6.0,
              "output_stride": 32, "first_layer_is_expansion": True,
              "finegrained_output": True, "hidden_act": "relu6", "tf_padding": False,
              "layer_norm_eps": 1e-5,
              "classifier_dropout_prob": float(model.get("dropout_rate", 0.2))}
    return hf_mobilenet_v2, config, _rename(variables, _mobilenet_path(order))
  what = f"model.name={name!r}"
  if name in ("resnet18", "resnet34"):
    what += f" with model.stem={model.get('stem')!r} (a 3x3 stem without max-pool)"
  elif name == "mobilenet_v2":
    what += " with model.cifar_strides=True"
  raise errors.UserError(
      f"{what} has no Hugging Face transformers architecture, so --format=hf cannot write it; "
      f"export it with {common.OTHER_FORMATS}. (transformers holds ResNet-18/34 with "
      "model.stem='imagenet', MobileNetV2 with model.cifar_strides=False and the Hub "
      "architectures of model.name='hub' runs.)")


def _hub_variables(workdir: Path, run: dict):
  """(family, run's HF config, Flax variables of the family's module with a head) of any run."""
  teacher = pretrained.load(str(workdir), on_host=True)  # backbone + the run's head
  hf_config_path = workdir / "hf_config.json"
  if hf_config_path.is_file():
    hf_config = json.loads(hf_config_path.read_text())
    family = models.family_of(hf_config, str(workdir))
    if not hasattr(family, "hf_export"):
      raise errors.UserError(f"a {hf_config.get('model_type')!r} model has no Hugging Face "
                             f"export in kdjax; export it with {common.OTHER_FORMATS}")
    _check_image_size(hf_config, int(run["data"]["image_size"]))
    return family, hf_config, _classifier_variables(teacher.variables)
  return student_as_hub(run["model"], int(run["data"]["image_size"]), teacher.variables)


def to_hf(workdir, out, overwrite: bool = False) -> dict:
  """Writes run `workdir` as a Hugging Face checkpoint directory `out`; returns its record.
  `out` is written in a temporary directory and moved into place when complete; an existing
  `out` is replaced only with `overwrite`."""
  workdir, out = Path(workdir).resolve(), Path(out).resolve()
  run = records.check_paths(workdir, out, overwrite)
  family, hf_config, variables = _hub_variables(workdir, run)
  hf_config, architecture, variables = family.hf_export(hf_config, variables)
  num_classes = int(variables["params"]["classifier"]["kernel"].shape[-1])
  config = _classifier_config(architecture, hf_config, records.class_names(run, num_classes))
  layout = family.hf_layout(config, num_classes)
  tensors = hf_tensors(family, config, layout, variables)
  processor = _processor(run["data"])
  record = records.record(workdir, "hf", architecture, num_classes)

  def fill(tmp: Path):
    safetensors.numpy.save_file(tensors, str(tmp / hub.SAFETENSORS_NAME),
                                metadata={"format": "pt"})

  records.write_dir(out, fill, {"config.json": config, "preprocessor_config.json": processor,
                                records.RECORD_NAME: record})
  logging.info("exported %s (step %s) to %s as %s", workdir, record["step"], out, architecture)
  return record
