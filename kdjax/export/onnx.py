"""`--format=onnx`: the same eval forward as `--format=stablehlo` (serving.py: stored images in,
the run's eval view, the network, logits and probabilities out), for any run, as ONNX graphs
that onnxruntime (or any ONNX runtime at opset 23) runs.

The directory holds model.uint8.onnx and model.float32.onnx (input "images" [batch, H, W, C]
NHWC RGB, uint8 in [0, 255] or float32 in [0, 1], batch symbolic; outputs "logits" and
"probabilities"; weights as initializers), serving.json (as the StableHLO export's, format
"onnx") and kdjax_export.json.

The converter is jax2onnx 0.17.1 (requirements-onnx.txt; installed with --no-deps, as it caps
orbax-checkpoint below kdjax's pin). Four of its defects break kdjax's networks; `_converter`
works around each, for that version only (checked), and the tests compare every exported graph
with JAX in onnxruntime:
1. its optimisation pass `remove_redundant_transpose_pairs` corrupts a ResNet with two identity
   blocks before a stage (onnxruntime: "Add ... Incompatible dimensions"): not run;
2. its flax `max_pool` rewrite takes keywords and string padding only: explicit padding is
   applied first (-inf) and the pool run as VALID;
3. its `jax.image.resize` rewrite refuses antialiasing: JAX's own resize (scale_and_translate,
   a matmul with computed weights) is converted instead;
4. its flax `pool` / `avg_pool` rewrites refuse explicit padding: the lax ops are converted.
Convolutions are XLA's (`model.conv_impl=xla`), computed in float32 (onnxruntime has no CPU
bfloat16 convolution): a bfloat16 run's ONNX graph is its float32 twin.
"""

import importlib.metadata
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kdjax import errors
from kdjax.export import record as records
from kdjax.export import serving, stablehlo

JAX2ONNX_VERSION = "0.17.1"  # the version whose defects _converter works around
INSTALL = ("pip install -r requirements-onnx.txt && pip install --no-deps "
           f"jax2onnx=={JAX2ONNX_VERSION}")
_PATCHED = []


def file_name(dtype: str) -> str:
  return f"model.{dtype}.onnx"


def _converter():
  """jax2onnx's `to_onnx`, with the work-arounds of the module docstring applied once."""
  try:
    version = importlib.metadata.version("jax2onnx")
  except importlib.metadata.PackageNotFoundError as e:
    raise errors.UserError(f"--format=onnx needs jax2onnx: {INSTALL}") from e
  if version != JAX2ONNX_VERSION:
    raise errors.UserError(f"--format=onnx is tested with jax2onnx {JAX2ONNX_VERSION}, not "
                           f"{version}: {INSTALL}")
  import jax2onnx
  from jax2onnx.converter import ir_optimizations
  from jax2onnx.plugins.flax.linen import avg_pool, max_pool, pool
  from jax2onnx.plugins.jax.image import resize

  if not _PATCHED:
    ir_optimizations._OPTIMIZER_PASSES = tuple(  # 1
        p for p in ir_optimizations._OPTIMIZER_PASSES
        if p.name != "remove_redundant_transpose_pairs")
    make_patch = max_pool.MaxPoolPlugin._make_patch

    def padded_max_pool(cls, original):  # 2
      patched = make_patch(original)

      def pool_fn(x, window_shape, strides=None, padding="VALID"):
        if not isinstance(padding, str):
          pads = ([(0, 0)] * (x.ndim - 1 - len(padding)) + [tuple(p) for p in padding]
                  + [(0, 0)])
          x = jnp.pad(x, pads, constant_values=-jnp.inf)
          padding = "VALID"
        return patched(x, window_shape=tuple(window_shape), strides=strides, padding=padding)

      return pool_fn

    max_pool.MaxPoolPlugin._make_patch = classmethod(padded_max_pool)
    resize.ImageResizePlugin.binding_specs = classmethod(lambda cls: [])  # 3
    pool.PoolPlugin.binding_specs = classmethod(lambda cls: [])  # 4
    avg_pool.AvgPoolPlugin.binding_specs = classmethod(lambda cls: [])
    _PATCHED.append(True)
  return jax2onnx.to_onnx


def to_onnx(workdir, out, overwrite: bool = False) -> dict:
  """Writes run `workdir`'s eval forward as ONNX graphs in `out`; returns the record."""
  workdir, out = Path(workdir).resolve(), Path(out).resolve()
  run = records.check_paths(workdir, out, overwrite)
  convert = _converter()
  servable = serving.load(workdir, conv_impl="xla", dtype="float32")
  variables = jax.tree.map(jnp.asarray, servable.variables)

  def fill(tmp: Path):
    for dtype in serving.INPUT_RANGES:
      spec = jax.ShapeDtypeStruct(("batch", *servable.input_shape), np.dtype(dtype))
      convert(lambda images: servable.forward(variables, images), [spec],
              model_name="kdjax", return_mode="file", output_path=str(tmp / file_name(dtype)),
              input_names=["images"], output_names=list(stablehlo.OUTPUTS))

  record = records.record(workdir, "onnx", run["model"]["name"], servable.num_classes)
  spec = stablehlo.serving_spec(servable, "onnx", {d: file_name(d) for d in serving.INPUT_RANGES})
  spec["opset"] = 23
  records.write_dir(out, fill, {stablehlo.SERVING_NAME: spec, records.RECORD_NAME: record})
  logging.info("exported %s (step %s) to %s as ONNX", workdir, record["step"], out)
  return record


def load(directory, dtype: str = "uint8"):
  """(an onnxruntime session of the export's `dtype` graph, serving.json)."""
  try:
    import onnxruntime  # optional: only ONNX exports need it
  except ImportError as e:
    raise errors.UserError(f"running an ONNX export needs onnxruntime: {INSTALL}") from e
  directory = Path(directory)
  spec = json.loads((directory / stablehlo.SERVING_NAME).read_text())
  session = onnxruntime.InferenceSession(str(directory / spec["files"][dtype]),
                                         providers=["CPUExecutionProvider"])
  return session, spec
