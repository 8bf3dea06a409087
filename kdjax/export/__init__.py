"""Export a kdjax run in the formats people deploy, each with the record of what it came from.

  python -m kdjax.export --workdir=RUN --out=DIR --format=hf|stablehlo|onnx

- hf (hf.py): a Hugging Face checkpoint directory, where transformers has the architecture;
- stablehlo (stablehlo.py): the eval forward, preprocessing included, for any run;
- onnx (onnx.py): the same forward as an ONNX graph, for any run.
`kdjax.predict` runs any of them, or a run directory.
"""

from kdjax.export.hf import hf_tensors, student_as_hub, to_hf, trace
from kdjax.export.onnx import to_onnx
from kdjax.export.stablehlo import to_stablehlo

FORMATS = {"hf": to_hf, "stablehlo": to_stablehlo, "onnx": to_onnx}


def export(workdir, out, format: str = "hf", overwrite: bool = False, **options) -> dict:  # noqa: A002
  """Writes run `workdir` to `out` in `format` (FORMATS); returns the export's record.
  `options`: the format's own (stablehlo: `platforms`)."""
  return FORMATS[format](workdir, out, overwrite=overwrite, **options)


__all__ = ["FORMATS", "export", "hf_tensors", "student_as_hub", "to_hf", "to_onnx",
           "to_stablehlo", "trace"]
