r"""Exported StableHLO against kdjax's own eval step: images per second, same batch, same machine.

  python -m kdjax.tools.bench_export --out=experiments/results/export_cpu_resnet18_32px_b128
  python -m kdjax.tools.bench_export --workdir=RUN --batch=256 --out=...   # an existing run

Without `--workdir` it trains a one-step run of `--student` (kdjax_digits stored at `--size` px;
the weights do not change the speed) in a temporary directory. Rows, each the median of
`--steps` calls on one fixed batch after warm-up, timed round-robin (one call of every row per
round, so a drift of the machine's speed affects each alike):
  kdjax_eval   what the trainer's evaluation runs per batch: the eval view (jitted
               `augment.preprocess_eval` of the stored uint8 batch) then the jitted eval step
               (`steps.make_eval_step`: forward, CE, accuracy sums), convolutions `auto`;
  forward_jit  `serving.Servable.forward` (eval view + forward + softmax), jitted here;
  stablehlo    the `--format=stablehlo` export, deserialized from disk, `jax.jit(exported.call)`;
  onnx         the `--format=onnx` export (uint8 graph) in onnxruntime, CPU provider (`--onnx`).
Writes OUT.json (every timing, the machine, the command) and prints the table.
"""

import functools
import json
import os
import sys
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app, flags

from kdjax import configlib, runtime, steps
from kdjax.data import augment
from kdjax.export import onnx, serving, stablehlo
from kdjax.tools import bench_rows
from kdjax.train import trainer

_WORKDIR = flags.DEFINE_string("workdir", "", "A kdjax run; empty: a one-step run is trained.")
_STUDENT = flags.DEFINE_string("student", "resnet18", "model.name of the one-step run.")
_SIZE = flags.DEFINE_integer("size", 32, "Stored and input size of the one-step run (px).")
_BATCH = flags.DEFINE_integer("batch", 128, "Images per call.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls per row.")
_OUT = flags.DEFINE_string("out", "", "Write OUT.json.")
_ONNX = flags.DEFINE_bool("onnx", True, "Also time the ONNX export in onnxruntime.")


def _one_step_run(directory: str) -> str:
  config = configlib.load_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                            "demo.py")).get_config("arm=scratch")
  config.model.name = _STUDENT.value
  config.model.width = 64
  config.data.load_size = config.data.image_size = _SIZE.value
  config.total_steps, config.checkpoint_every_steps = 1, 1
  config.data.test_split = ""
  config.data.val_fraction = 0.0
  trainer.train_and_evaluate(config, directory)
  return directory


def main(argv):
  del argv
  runtime.configure(True)
  runtime.quiet_libraries()
  tmp = tempfile.mkdtemp()
  workdir = _WORKDIR.value or _one_step_run(os.path.join(tmp, "run"))
  out_dir = Path(tmp) / "stablehlo"
  stablehlo.to_stablehlo(workdir, out_dir)
  exported, spec = stablehlo.load(out_dir, "uint8")
  servable = serving.load(workdir)
  native = serving.load(workdir, conv_impl="auto")  # what the trainer's evaluation compiles
  data = ml_collections.ConfigDict(servable.run["data"])
  b = _BATCH.value
  images = jax.device_put(np.random.RandomState(0).randint(
      0, 256, (b, *servable.input_shape)).astype(np.uint8))
  labels = jax.device_put(np.zeros(b, np.int32))
  mask = jax.device_put(np.ones(b, np.float32))
  prep = jax.jit(functools.partial(augment.preprocess_eval, cfg=data))
  eval_step = jax.jit(steps.make_eval_step(
      lambda v, x: native.teacher.apply(v, x)["logits"], native.num_classes))
  forward = jax.jit(servable.forward)
  call = jax.jit(exported.call)
  variables = jax.device_put(native.variables)

  def kdjax_eval():
    batch = {"image": prep(images), "label": labels, "mask": mask}
    jax.block_until_ready(eval_step(variables, batch))

  rows = {"kdjax_eval": kdjax_eval,
          "forward_jit": lambda: jax.block_until_ready(forward(variables, images)),
          "stablehlo": lambda: jax.block_until_ready(call(images))}
  flops = {"kdjax_eval": steps.xla_flops(eval_step, variables, {
               "image": prep(images), "label": labels, "mask": mask}),
           "forward_jit": steps.xla_flops(forward, variables, images)}
  # XLA's cost analysis cannot read the shape-polymorphic module: the same program as forward_jit
  flops["stablehlo"] = flops["forward_jit"]
  if _ONNX.value:
    onnx.to_onnx(workdir, Path(tmp) / "onnx")
    session, _ = onnx.load(Path(tmp) / "onnx", "uint8")
    host_images = np.asarray(images)
    rows["onnx"] = lambda: session.run(["logits", "probabilities"], {"images": host_images})
    flops["onnx"] = flops["forward_jit"]
  for fn in rows.values():  # warm-up: compile, then two calls
    fn()
    fn()
  times = {k: [] for k in rows}
  for _ in range(_STEPS.value):
    for name, fn in rows.items():
      times[name].append(bench_rows.time_calls(fn, 1, 0)["seconds"])
  report = {"command": " ".join(["python -m kdjax.tools.bench_export", *sys.argv[1:]]),
            "machine": bench_rows.machine_info(), "run": str(workdir),
            "model": servable.run["model"]["name"], "input": spec["input"]["shape"],
            "image_size": servable.run["data"]["image_size"], "batch": b, "rows": {}}
  base = float(np.median(times["kdjax_eval"]))
  print(f"{'row':<12} {'ms/batch':>9} {'images/s':>9} {'GFLOP/s':>8} {'vs kdjax_eval':>13}")
  for name, ts in times.items():
    t = float(np.median(ts))
    report["rows"][name] = {"seconds": t, "min_seconds": min(ts), "all_seconds": ts,
                            "images_per_s": b / t, "xla_flops": flops[name],
                            "vs_kdjax_eval": base / t}
    print(f"{name:<12} {t * 1e3:9.1f} {b / t:9.0f} {flops[name] / t / 1e9:8.1f} "
          f"{base / t:12.2f}x")
  if _OUT.value:
    Path(_OUT.value + ".json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
