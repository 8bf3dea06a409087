r"""Export a kdjax run of a Hugging Face architecture as a Hugging Face checkpoint directory.

  python -m kdjax.export --workdir=RUN --out=DIR

RUN is a kdjax run whose network is a Hub architecture: trained from scratch from a config
(`model.name=hub`, `model.hub_config`), or started from a checkpoint (`model.pretrained`: a
fine-tune, or a linear probe whose frozen backbone is written with the trained head). DIR
gets what `save_pretrained` writes and every loader reads:
- config.json: the run's architecture as `<Family>ForImageClassification`, with the task's
  class names as `id2label`;
- model.safetensors: the weights under transformers' names, float32;
- preprocessor_config.json: the run's eval view (resize to `data.image_size`, the run's
  normalisation);
- kdjax_export.json: what it came from (run directory, step, sha1 of the run's config.json,
  the run's last evaluation).
`transformers.AutoModelForImageClassification.from_pretrained(DIR)` (PyTorch) gives the run's
logits (tested <= 1e-4) and `kdjax.hf.pretrained.load(DIR)` loads it like any Hub checkpoint: this
is how a network trained by kdjax is published as a teacher or a pre-trained student.

The weights are mapped without a second, hand-written converter: the family's import converter
(`convert`, which only moves, transposes, reshapes and concatenates tensors) is run on
tensors holding their own element indices, which says where every element of the Flax
variables came from; export writes each element back there. A converter that computed
anything would fail that check, loudly. Exportable families: ResNet and ViT (`hf_layout` in
kdjax/models/hf/).
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import flax
import ml_collections
import numpy as np
import safetensors.numpy  # a transformers dependency: no torch needed
from absl import app, flags, logging

from kdjax import checkpoint, cli, errors, files, models, runtime
from kdjax.data import sources
from kdjax.hf import hub, pretrained
from kdjax.models.hf import common

FORMATS = ("hf",)
# Exact float32 indices: a tensor with more elements cannot be traced.
_MAX_TRACEABLE = 2**24


def _flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(k): np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def _float_names(layout: dict) -> list[str]:
  """The float tensors of `layout`, in order: what `trace` indexes."""
  return [n for n, (_, dtype) in layout.items() if dtype == "float32"]


def trace(family, hf_config: dict, layout: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Flax variable path ("params/.../kernel") -> (tensor index into `_float_names(layout)`,
  element index in that tensor), both arrays of the variable's shape: where `family.convert`
  takes every element of the variables from."""
  names = _float_names(layout)
  index = {n: i for i, n in enumerate(names)}
  module = family.build(hf_config, frozenset(layout), num_classes=None)

  def run(fill):
    arrays = {n: (fill(index[n], shape) if dtype == "float32"
                  else np.zeros(shape, dtype)) for n, (shape, dtype) in layout.items()}
    tensors = common.Tensors(arrays, getattr(family, "PREFIXES", ()))
    variables = family.convert(tensors, module)
    unused_float = [n for n in tensors.unused() if layout[n][1] == "float32"]
    if unused_float:
      raise errors.UserError(f"export: the converter does not read {unused_float[:5]}")
    return _flat(variables)

  too_big = [n for n in names if np.prod(layout[n][0], dtype=np.int64) > _MAX_TRACEABLE]
  if too_big:
    raise errors.UserError(f"export: tensors {too_big[:3]} have more than 2**24 elements")
  which = run(lambda i, shape: np.full(shape, i, np.float32))
  where = run(lambda i, shape: np.arange(np.prod(shape, dtype=np.int64), dtype=np.float32)
              .reshape(shape))
  return {k: (which[k].astype(np.int64), where[k].astype(np.int64)) for k in which}


def hf_tensors(family, hf_config: dict, layout: dict, variables) -> dict[str, np.ndarray]:
  """The Flax `variables` of `family`'s module with a head (built from `hf_config`) as the
  tensors of `layout`, each float element written exactly once; integer buffers (batch norm's
  num_batches_tracked) are 0."""
  paths = trace(family, hf_config, layout)
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
  bad = [n for n, count in written.items() if not np.all(count == 1)]
  if bad:
    raise errors.UserError(f"export: the converter does not map {bad[:5]} one to one")
  return out


def _class_names(run: dict, num_classes: int) -> list[str]:
  try:
    names = list(sources.dataset_builder(ml_collections.ConfigDict(run["data"]))
                 .info.features["label"].names)
  except Exception as e:  # noqa: BLE001  (any reason the dataset cannot be opened)
    logging.warning("export: class names of %s unavailable (%s); using their indices",
                    run["data"]["name"], e)
    names = []
  return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def _last_eval(workdir: Path) -> dict:
  """The run's last evaluation metrics (keys with '/', e.g. test/accuracy)."""
  last = {}
  path = workdir / "metrics.jsonl"
  if path.is_file():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if any(k.endswith("/accuracy") and not k.startswith("train") for k in row):
        last = {k: v for k, v in row.items() if "/" in k and not k.startswith("train")}
  return last


def _check_paths(workdir: Path, out: Path, overwrite: bool) -> None:
  """Fails unless `workdir` is a run of a Hub architecture and `out` may be written."""
  if not (workdir / "hf_config.json").is_file():
    raise errors.UserError(
        f"{workdir} is not a kdjax run of a Hugging Face architecture (no hf_config.json): "
        "export works for runs with model.name=hub (model.hub_config or model.pretrained) "
        "and model.pretrained fine-tunes or probes; kdjax's own students are not exportable")
  if out == workdir or out in workdir.parents or workdir in out.parents:
    raise errors.UserError(f"--out={out} overlaps the run {workdir}: export into a directory "
                           "outside the run")
  if out.exists() and not overwrite:
    raise errors.UserError(f"{out} exists: choose another --out, or pass --overwrite")


def _check_image_size(hf_config: dict, size: int) -> None:
  """Fails on a ViT run at another size than its config's."""
  if hf_config.get("model_type") == "vit" and int(hf_config.get("image_size", 224)) != size:
    raise errors.UserError(
        f"the run's ViT works at data.image_size={size} px, its config at "
        f"{hf_config.get('image_size', 224)} px: export needs them equal (position embeddings "
        "are stored at the config's size); train at the config's size")


def _classifier_config(family, hf_config: dict, names: list[str]) -> dict:
  """The exported config.json: the run's architecture with a head over the classes `names`."""
  config = {**hf_config, "architectures": [family.HF_CLASSIFIER],
            "id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)}, "torch_dtype": "float32"}
  config.pop("num_labels", None)
  return config


def _classifier_variables(teacher_variables, hf_config: dict) -> dict:
  """The run's backbone and head (as loaded) as the Flax variables of the family's module with a
  head."""
  params = teacher_variables["params"]
  stats = teacher_variables.get("batch_stats") or {}
  # a checkpoint saved by ViTModel has a pooler that ViTForImageClassification lacks and its
  # head does not read: not exported
  backbone = {k: v for k, v in params["backbone"].items()
              if not (k == "pooler" and hf_config.get("model_type") == "vit")}
  variables = {"params": {**backbone, "classifier": params["classifier"]}}
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


def _record(workdir: Path, architecture: str, num_classes: int) -> dict:
  """kdjax_export.json: the run, its latest checkpoint step, config hash and last evaluation."""
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), max_to_keep=1_000_000,
                                 read_only=True)
  step = ckpt.latest_step()
  ckpt.close()
  return {"format": "hf", "run": str(workdir), "step": step,
          "config_sha1": hashlib.sha1((workdir / "config.json").read_bytes()).hexdigest(),
          "evaluation": _last_eval(workdir), "architecture": architecture,
          "num_classes": num_classes}


def _write(out: Path, tensors: dict, jsons: dict[str, dict]) -> None:
  """`out` with the weights and the JSON files `jsons` (name -> content), written in a temporary
  directory beside it and moved into place when complete."""
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
  try:
    safetensors.numpy.save_file(tensors, str(tmp / hub.SAFETENSORS_NAME),
                                metadata={"format": "pt"})
    for name, obj in jsons.items():
      (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
    files.replace_dir(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def to_hf(workdir, out, overwrite: bool = False) -> dict:
  """Writes run `workdir` as a Hugging Face checkpoint directory `out`; returns its record.
  `out` is written in a temporary directory and moved into place when complete; an existing
  `out` is replaced only with `overwrite`."""
  workdir, out = Path(workdir).resolve(), Path(out).resolve()
  _check_paths(workdir, out, overwrite)
  run = json.loads((workdir / "config.json").read_text())
  hf_config = json.loads((workdir / "hf_config.json").read_text())
  family = models.family_of(hf_config, str(workdir))
  if not hasattr(family, "hf_layout"):
    raise errors.UserError(f"exporting a {hf_config.get('model_type')!r} model is not "
                           "supported yet; exportable Hub architectures: ResNet and ViT")
  teacher = pretrained.load(str(workdir), on_host=True)  # backbone + the run's head, host arrays
  num_classes = int(teacher.variables["params"]["classifier"]["kernel"].shape[-1])
  _check_image_size(hf_config, int(run["data"]["image_size"]))
  config = _classifier_config(family, hf_config, _class_names(run, num_classes))
  layout = family.hf_layout(config, num_classes)
  tensors = hf_tensors(family, config, layout, _classifier_variables(teacher.variables, hf_config))
  processor = _processor(run["data"])
  record = _record(workdir, family.HF_CLASSIFIER, num_classes)
  _write(out, tensors, {"config.json": config, "preprocessor_config.json": processor,
                        "kdjax_export.json": record})
  logging.info("exported %s (step %s) to %s as %s", workdir, record["step"], out,
               family.HF_CLASSIFIER)
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_libraries()
  workdir, out = flags.FLAGS.workdir, flags.FLAGS.out
  if not workdir or not out:
    raise errors.UserError("pass --workdir=RUN and --out=DIR")
  record = to_hf(workdir, out, flags.FLAGS.overwrite)
  print(f"wrote {out}: {record['architecture']}, {record['num_classes']} classes, "
        f"step {record['step']}", flush=True)


if __name__ == "__main__":
  # Flags are defined here, not on import (as generate and data/folder.py do): kdjax.tools.cost
  # and kdjax.main define --workdir / --out / --overwrite on import too.
  flags.DEFINE_string("workdir", None, "The kdjax run to export.")
  flags.DEFINE_string("out", None, "The directory to write.")
  flags.DEFINE_enum("format", "hf", FORMATS, "hf: a Hugging Face checkpoint directory.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
  cli.run(main)
