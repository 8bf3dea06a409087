"""`--format=onnx` (work in progress in this change)."""

import json
from pathlib import Path

from kdjax import errors
from kdjax.export import stablehlo


def load(directory):
  """(an onnxruntime session of DIR/model.onnx, serving.json)."""
  try:
    import onnxruntime  # optional: only ONNX exports need it
  except ImportError as e:
    raise errors.UserError("running an ONNX export needs onnxruntime: pip install -r "
                           "requirements-onnx.txt") from e
  directory = Path(directory)
  spec = json.loads((directory / stablehlo.SERVING_NAME).read_text())
  session = onnxruntime.InferenceSession(str(directory / spec["files"]["uint8"]),
                                         providers=["CPUExecutionProvider"])
  return session, spec
