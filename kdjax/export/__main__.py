"""python -m kdjax.export --workdir=RUN --out=DIR [--format=hf|stablehlo|onnx] [--overwrite]"""

from absl import app, flags

from kdjax import cli, errors, runtime
from kdjax import export as export_lib
from kdjax.export import stablehlo

# Flags are defined here, not on import (as generate and data/folder.py do): kdjax.tools.cost
# and kdjax.main define --workdir / --out / --overwrite on import too.
flags.DEFINE_string("workdir", None, "The kdjax run to export.")
flags.DEFINE_string("out", None, "The directory to write.")
flags.DEFINE_enum("format", "hf", sorted(export_lib.FORMATS),
                  "hf: a Hugging Face checkpoint directory (where transformers has the "
                  "architecture); stablehlo: the eval forward, preprocessing included, any run; "
                  "onnx: the same forward as an ONNX graph.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
flags.DEFINE_list("platforms", list(stablehlo.PLATFORMS), "stablehlo: the platforms the program "
                  "is lowered for (cpu, cuda, rocm, tpu).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_libraries()
  f = flags.FLAGS
  if not f.workdir or not f.out:
    raise errors.UserError("pass --workdir=RUN and --out=DIR")
  options = {"platforms": tuple(f.platforms)} if f.format == "stablehlo" else {}
  record = export_lib.export(f.workdir, f.out, f.format, f.overwrite, **options)
  print(f"wrote {f.out} ({f.format}): {record['architecture']}, {record['num_classes']} classes, "
        f"step {record['step']}", flush=True)


if __name__ == "__main__":
  cli.run(main)
