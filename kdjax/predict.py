r"""Classify images with an exported model or a kdjax run: top-k classes with names and
probabilities.

  python -m kdjax.predict --model=DIR [--top_k=5] [--batch_size=64] [--output=FILE.jsonl] \
      IMAGE_OR_DIRECTORY...

DIR is any of:
- a StableHLO export (serving.json): the exported forward, preprocessing included; each image
  is first brought to the stored size as the run's data source would (serving.to_stored);
- an ONNX export (model.onnx + serving.json), run by onnxruntime, the same way;
- a Hugging Face checkpoint directory (config.json + safetensors, e.g. `--format=hf`), through
  kdjax.hf.pretrained with its preprocessor_config.json;
- a kdjax run directory (config.json + checkpoints/): its latest checkpoint, the run's eval view.
Directories of images are read recursively in sorted order. One line per image on stdout
("FILE: class p, class p, ..."); `--output` also writes them as JSON lines. Long inputs show a
progress bar on stderr.
"""

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import flags
from PIL import Image

from kdjax import cli, errors, runtime
from kdjax.export import onnx as onnx_export
from kdjax.export import serving, stablehlo
from kdjax.hf import pretrained

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclasses.dataclass
class Predictor:
  """`prepare(decoded uint8 RGB image) -> model input`, `probabilities(stacked inputs) -> [B, C]`,
  and the class names."""

  kind: str
  class_names: list[str]
  prepare: Callable[[np.ndarray], np.ndarray]
  probabilities: Callable[[np.ndarray], np.ndarray]


def _stablehlo(directory: Path) -> Predictor:
  exported, spec = stablehlo.load(directory, "uint8")
  return Predictor("stablehlo", spec["class_names"],
                   lambda im: serving.to_stored(im, spec["load"]),
                   lambda x: np.asarray(exported.call(x)[1]))


def _onnx(directory: Path) -> Predictor:
  session, spec = onnx_export.load(directory)
  return Predictor("onnx", spec["class_names"], lambda im: serving.to_stored(im, spec["load"]),
                   lambda x: session.run(["probabilities"], {"images": x})[0])


def _run(directory: Path) -> Predictor:
  servable = serving.load(directory)
  forward = jax.jit(lambda x: servable.forward(servable.variables, x)[1])
  load = servable.load
  return Predictor("run", servable.class_names, lambda im: serving.to_stored(im, load),
                   lambda x: np.asarray(forward(x)))


def _hf(directory: Path) -> Predictor:
  model = pretrained.load(str(directory))
  out = jax.eval_shape(model.apply, model.variables,
                       jax.ShapeDtypeStruct((1, *model.image_size, 3), jnp.float32))
  if "logits" not in out:
    raise errors.UserError(f"{directory} has no classification head: kdjax.predict needs a "
                           "<Model>ForImageClassification checkpoint (e.g. --format=hf)")
  labels = model.config.get("id2label") or {}
  names = [labels.get(str(i), str(i)) for i in range(int(out["logits"].shape[-1]))]
  forward = jax.jit(lambda x: jax.nn.softmax(model.apply(model.variables, x)["logits"], -1))
  return Predictor("hf", names, lambda im: np.asarray(model.preprocess(im[None]))[0],
                   lambda x: np.asarray(forward(x)))


def open_model(model: str) -> Predictor:
  """The predictor of an export or run directory `model`."""
  directory = Path(model).expanduser()
  if not directory.is_dir():
    raise errors.UserError(f"--model={model} is not a directory: pass an export "
                           "(python -m kdjax.export) or a kdjax run directory")
  spec_path = directory / stablehlo.SERVING_NAME
  if spec_path.is_file():
    fmt = json.loads(spec_path.read_text()).get("format")
    return _onnx(directory) if fmt == "onnx" else _stablehlo(directory)
  if (directory / "checkpoints").is_dir() and (directory / "config.json").is_file():
    return _run(directory)
  if (directory / "config.json").is_file():
    return _hf(directory)
  raise errors.UserError(f"{directory} is not a kdjax export (serving.json), a Hugging Face "
                         "checkpoint (config.json) or a kdjax run (config.json + checkpoints/)")


def image_files(paths: Iterable[str]) -> list[str]:
  """The image files named, and those under the directories named (recursively, sorted)."""
  out = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(os.path.join(root, n) for root, _, names in os.walk(p) for n in names
                     if n.lower().endswith(IMAGE_EXTENSIONS))
      if not found:
        raise errors.UserError(f"{p} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
      out += found
    elif os.path.isfile(p):
      out.append(p)
    else:
      raise errors.UserError(f"{p}: no such file or directory")
  return out


def _decode(path: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError) as e:
    raise errors.UserError(f"{path} is not an image PIL can read ({e})") from e


def predict(model, paths: Iterable[str], top_k: int = 5, batch_size: int = 64,
            progress: bool | None = None) -> list[dict]:
  """[{"file", "top": [{"index", "class", "probability"}, ...]}] for every image of `paths`
  (files or directories), `batch_size` at a time. `model`: a directory or a Predictor."""
  predictor = model if isinstance(model, Predictor) else open_model(model)
  files = image_files(paths)
  k = min(top_k, len(predictor.class_names))
  results = []
  bar = tqdm.tqdm(total=len(files), unit="img", file=sys.stderr,
                  disable=not (len(files) > batch_size if progress is None else progress))
  for start in range(0, len(files), batch_size):
    chunk = files[start:start + batch_size]
    probs = predictor.probabilities(np.stack([predictor.prepare(_decode(f)) for f in chunk]))
    for f, p in zip(chunk, probs):
      top = np.argsort(-p, kind="stable")[:k]
      results.append({"file": f, "top": [
          {"index": int(i), "class": predictor.class_names[i], "probability": float(p[i])}
          for i in top]})
    bar.update(len(chunk))
  bar.close()
  return results


def main(argv):
  runtime.quiet_libraries()
  f = flags.FLAGS
  if not f.model or len(argv) < 2:
    raise errors.UserError("pass --model=DIR and at least one image file or directory")
  if f.top_k < 1 or f.batch_size < 1:
    raise errors.UserError("--top_k and --batch_size must be at least 1")
  results = predict(f.model, argv[1:], f.top_k, f.batch_size)
  lines = []
  for r in results:
    shown = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
    print(f"{r['file']}: {shown}", flush=False)
    lines.append(json.dumps(r))
  sys.stdout.flush()
  if f.output:
    Path(f.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  flags.DEFINE_string("model", None, "An export (kdjax.export), a Hugging Face checkpoint "
                      "directory or a kdjax run directory.")
  flags.DEFINE_integer("top_k", 5, "Classes shown per image.")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
  flags.DEFINE_string("output", None, "Also write the predictions as JSON lines to this file.")
  cli.run(main)
