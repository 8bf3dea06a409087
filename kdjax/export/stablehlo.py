"""`--format=stablehlo`: a run's eval forward (serving.py: stored images in, the eval view, the
network, logits and probabilities out) serialized with `jax.export`, for any kdjax run.

The directory holds
- model.uint8.stablehlo, model.float32.stablehlo: one serialized `jax.export.Exported` per input
  dtype (uint8 in [0, 255]; float32 in [0, 1]), input [batch, H, W, C] NHWC RGB with a symbolic
  batch dimension, outputs (logits [batch, classes], probabilities [batch, classes]); the
  weights are constants inside; lowered for every platform in `platforms` (CPU: kdjax's CPU
  convolutions; elsewhere XLA's);
- serving.json: the input spec, class names, output names, how a decoded image becomes a stored
  one (`load`, used by kdjax.predict), and the jax version that wrote it;
- kdjax_export.json: what it came from.
Reloading needs jax and numpy only, no kdjax (`load` below is the whole of it):

    exported = jax.export.deserialize(bytearray(open("model.uint8.stablehlo", "rb").read()))
    logits, probabilities = exported.call(images_uint8)
"""

import json
from pathlib import Path

import jax
import numpy as np
from absl import logging

from kdjax.export import record as records
from kdjax.export import serving

SERVING_NAME = "serving.json"
PLATFORMS = ("cpu", "cuda")  # what `platforms` defaults to (tpu, rocm: pass them)
OUTPUTS = ("logits", "probabilities")


def file_name(dtype: str) -> str:
  return f"model.{dtype}.stablehlo"


def export_forward(servable: serving.Servable, dtype: str, platforms=PLATFORMS):
  """The `jax.export.Exported` of the servable's forward for `dtype` images, batch symbolic."""
  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, *servable.input_shape), np.dtype(dtype))
  variables = servable.variables
  fn = jax.jit(lambda images: servable.forward(variables, images))
  return jax.export.export(fn, platforms=tuple(platforms))(spec)


def serving_spec(servable: serving.Servable, fmt: str, files: dict) -> dict:
  """serving.json: the format, its files by input dtype, the input spec, the outputs, the class
  names, how a decoded image becomes a stored one (`load`) and the jax version."""
  shape = servable.input_shape
  return {"format": fmt, "files": files,
          "input": {"shape": ["batch", *shape], "layout": "NHWC",
                    "channels": "RGB" if shape[-1] == 3 else
                    "RGB + canvas mask (kdjax.data.sources.resize_on_load)",
                    "ranges": serving.INPUT_RANGES},
          "outputs": list(OUTPUTS), "class_names": servable.class_names,
          "load": servable.load, "jax_version": jax.__version__}


def to_stablehlo(workdir, out, overwrite: bool = False, platforms=PLATFORMS) -> dict:
  """Writes run `workdir`'s eval forward as serialized StableHLO in `out`; returns the record."""
  workdir, out = Path(workdir).resolve(), Path(out).resolve()
  run = records.check_paths(workdir, out, overwrite)
  servable = serving.load(workdir)
  blobs = {dtype: export_forward(servable, dtype, platforms).serialize()
           for dtype in serving.INPUT_RANGES}
  record = records.record(workdir, "stablehlo", run["model"]["name"], servable.num_classes)
  spec = serving_spec(servable, "stablehlo", {d: file_name(d) for d in blobs})
  spec["platforms"] = list(platforms)

  def fill(tmp: Path):
    for dtype, blob in blobs.items():
      (tmp / file_name(dtype)).write_bytes(bytes(blob))

  records.write_dir(out, fill, {SERVING_NAME: spec, records.RECORD_NAME: record})
  logging.info("exported %s (step %s) to %s as StableHLO for %s", workdir, record["step"], out,
               ", ".join(platforms))
  return record


def load(directory, dtype: str = "uint8"):
  """(the deserialized `jax.export.Exported` for `dtype` images, serving.json) of an export."""
  directory = Path(directory)
  spec = json.loads((directory / SERVING_NAME).read_text())
  blob = (directory / spec["files"][dtype]).read_bytes()
  return jax.export.deserialize(bytearray(blob)), spec
