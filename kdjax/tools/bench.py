r"""Benchmarks: kdjax's train steps and teacher forwards beside a PyTorch eager reference.

  pip install -r requirements-bench.txt          # adds torch==2.13.0 (the reference)
  python -m kdjax.tools.bench --config=configs/resnet18_cifar.py --out=experiments/results/bench_cpu

Rows (`--rows`), each timed after warm-up as the median of `--steps` calls on a fixed batch
(input pipeline excluded on both sides), in one process on one machine; all rows are built and
warmed up first, then timed round-robin (one call of every row, kdjax and torch, per round), so
a drift in the machine's speed affects every row alike:
  student    the config's student, CE only: the trainer's jitted step (train-mode forward,
             loss, backward, optimizer update, state donated)
  teacher    each teacher family's eval forward at `--teacher_size` px (batch `--teacher_batch`)
  online     the distillation step with each family run online (`--online_losses`)
  cached     the distillation step reading the first family's outputs from the batch, as
             teacher.mode=cached does (`--cached_losses`)
Losses: paper_a (CE + KD + align + unif: KD only for teachers with a task head), aft (CE + AFT),
feature_kd, kd, or `config` (the config's own loss.* weights).

Teachers (`--families`) are the real architectures (the config.json shapes of the named Hub
checkpoints) with random weights, built by transformers, saved as safetensors and loaded by
`kdjax.hf.pretrained.load`, the path of a downloaded checkpoint; classification families get a head
over `--num_classes` (an adapted teacher's shape). Throughput does not depend on the weights.

The reference (kdjax/tools/torch_reference.py) is the same step in PyTorch eager: the same student
architecture as torch.nn modules, the HF PyTorch teacher, the same loss terms and optimizer,
fp32 on CPU with every core; with `--config.model.dtype=bfloat16` (and teacher.dtype) on a GPU
it runs under bf16 autocast. Reported: kdjax / torch in images per second (> 1: kdjax faster).

FLOPs are XLA's cost analysis of each jitted step; achieved FLOP/s = FLOPs / median time; MFU
= achieved / the device's dense bf16 peak (PEAK_FLOPS; accelerators only). Writes OUT.json (every
timing, the machine, versions, the command) and OUT.md (the table), and prints the table.

This module is the command line, the machine's description and the report; the rows, their
steps and timers are kdjax/tools/bench_rows.py.
"""

import json
import os
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from kdjax import runtime
from kdjax.tools import bench_rows

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (student, batch, "
                                          "optimizer, loss).", lock_config=True)
_ROWS = flags.DEFINE_list("rows", list(bench_rows.ROW_KINDS), "Rows to measure.")
_FAMILIES = flags.DEFINE_list("families", ["resnet50", "vit_b16", "dinov2_b14", "clip_b16",
                                           "mobilenet_v2"], "Teacher families (ARCHITECTURES).")
_ONLINE = flags.DEFINE_list("online_losses", ["paper_a"], "Losses of the online rows.")
_CACHED = flags.DEFINE_list("cached_losses", ["paper_a", "aft"], "Losses of the cached rows.")
_BATCH = flags.DEFINE_integer("batch", 0, "Global batch of the train steps (0: config's).")
_TEACHER_BATCH = flags.DEFINE_integer("teacher_batch", 0, "Batch of the teacher rows (0: batch).")
_TEACHER_SIZE = flags.DEFINE_integer("teacher_size", 224, "Teacher input size (px).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes of the task.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls per row (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first (compilation included).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch eager reference.")
_LAYOUTS = flags.DEFINE_list("torch_layouts", ["channels_last", "nchw"],
                             "Reference memory layouts of the student row (the others: first).")
_INTERLEAVE = flags.DEFINE_bool(
    "interleave", True, "Time the rows round-robin (one call of each row per round) rather than "
    "one row after another: robust to a machine whose speed drifts.")
_OUT = flags.DEFINE_string("out", "", "Write OUT.json and OUT.md.")

# Dense bf16 peak FLOP/s per device (vendors' data sheets; H100/H200: SXM, without sparsity).
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H100": 989.4e12, "NVIDIA H200": 989.4e12,
    "NVIDIA H100 PCIe": 756.0e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "TPU v6 lite": 918e12,
}

# ------------------------------------------------------------------------------ the machine


def peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  return PEAK_FLOPS.get(kind) or next(
      (v for k, v in PEAK_FLOPS.items() if kind.startswith(k) and k.startswith("NVIDIA")), None)


def matmul_gflops() -> float:
  """This machine's jitted 2048^2 float32 matmul speed now (CPU speeds here drift over time)."""
  a = jax.numpy.ones((2048, 2048))
  mm = jax.jit(lambda a: a @ a)
  t = bench_rows.time_calls(lambda: mm(a).block_until_ready(), 5, 1)["seconds"]
  return 2 * 2048**3 / t / 1e9


# ------------------------------------------------------------------------------ the report


def row_record(name, kind, batch, kdjax_t, flops, peak, torch_t=None, **extra) -> dict:
  r = {"row": name, "kind": kind, "batch": batch, "kdjax": dict(kdjax_t), **extra}
  k = r["kdjax"]
  k["images_per_s"] = batch / k["seconds"]
  k["xla_flops"] = flops
  k["flops_per_s"] = flops / k["seconds"]
  if peak:
    k["mfu"] = k["flops_per_s"] / peak
  if torch_t:
    r["torch"] = {layout: dict(t, images_per_s=batch / t["seconds"])
                  for layout, t in torch_t.items()}
    best = max(t["images_per_s"] for t in r["torch"].values())
    r["kdjax_over_torch"] = k["images_per_s"] / best
  return r


def table(rows: list[dict]) -> str:
  student = next((r for r in rows if r["kind"] == "student"), None)
  lines = ["| row | batch | kdjax ms/step | kdjax img/s | GFLOP/img (XLA) | achieved TFLOP/s "
           "| MFU | torch img/s (best layout) | kdjax / torch | time vs student |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    k = r["kdjax"]
    mfu = f"{k['mfu']:.1%}" if "mfu" in k else "-"
    if "torch" in r:
      layout, t = max(r["torch"].items(), key=lambda kv: kv[1]["images_per_s"])
      torch_s = f"{t['images_per_s']:.1f} ({layout})"
      ratio = f"**{r['kdjax_over_torch']:.2f}x**"
    else:
      torch_s = ratio = "-"
    vs = "-"
    if student is not None and r["kind"] in ("student", "online", "cached") and (
        r["batch"] == student["batch"]):
      vs = f"{k['seconds'] / student['kdjax']['seconds']:.3f}x"
    lines.append(f"| {r['row']} | {r['batch']} | {k['seconds'] * 1e3:.1f} | "
                 f"{k['images_per_s']:.1f} | {k['xla_flops'] / r['batch'] / 1e9:.3g} | "
                 f"{k['flops_per_s'] / 1e12:.3g} | {mfu} | {torch_s} | {ratio} | {vs} |")
  return "\n".join(lines)


def _torch_device() -> str:
  """Where the reference runs: the GPU when JAX and torch both have one, else every CPU core."""
  import torch

  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_num_threads(os.cpu_count())
  return device


def _check_flags(config) -> None:
  """Fails early, before anything is built, on an unknown loss, family or row, or no warm-up."""
  for name in [*_ONLINE.value, *_CACHED.value]:
    bench_rows.loss_config(config, name)  # raises on an unknown loss name
  unknown = sorted(set(_FAMILIES.value) - set(bench_rows.ARCHITECTURES))
  if unknown:
    raise app.UsageError(f"unknown families {unknown}; valid: {sorted(bench_rows.ARCHITECTURES)}")
  unknown = sorted(set(_ROWS.value) - set(bench_rows.ROW_KINDS))
  if unknown:
    raise app.UsageError(f"unknown rows {unknown}; valid: {', '.join(bench_rows.ROW_KINDS)}")
  if _WARMUP.value < 1:
    raise app.UsageError("--warmup must be >= 1: the first call compiles")


def _build_rows(rows: bench_rows.Rows, batch: int) -> None:
  """Every row `--rows` asks for, built and warmed up (teacher rows at `--teacher_batch`)."""
  if "student" in _ROWS.value:
    rows.student()
  if {"teacher", "online", "cached"} & set(_ROWS.value):
    rows.teachers(_FAMILIES.value, set(_ROWS.value), _TEACHER_SIZE.value,
                  _TEACHER_BATCH.value or batch, _ONLINE.value, _CACHED.value)


def _time_rows(pending: list[bench_rows.Pending], peak) -> list[dict]:
  """Times the built rows (round-robin with `--interleave`); prints a line per row as it goes."""
  timer = bench_rows.interleaved if _INTERLEAVE.value else bench_rows.sequential
  records = []
  for p, t in zip(pending, timer(pending, _STEPS.value)):
    tt = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("torch/")}
    r = row_record(p.name, p.kind, p.batch, t["kdjax"], p.flops, peak, tt, **p.extra)
    records.append(r)
    print(json.dumps({k: v for k, v in r.items() if k not in ("kdjax", "torch")}
                     | {"kdjax_ms": round(t["kdjax"]["seconds"] * 1e3, 1),
                        "torch_ms": {lay: round(v["seconds"] * 1e3, 1) for lay, v in tt.items()}}),
          flush=True)
  return records


def _report(result: dict, config) -> None:
  """Prints the table under a line on the machine and settings; writes OUT.json and OUT.md."""
  info = result["machine"]
  header = (f"{info['platform']} {info['device_kind']} x{info['num_devices']} ({info['cpu']}, "
            f"{info['cpus']} CPUs), jax {info['jax']}, torch {info.get('torch', '-')}; student "
            f"{config.model.name} at {config.data.image_size} px, {config.model.dtype}; "
            f"teachers at {_TEACHER_SIZE.value} px, {config.teacher.dtype}; median of "
            f"{_STEPS.value} steps after {_WARMUP.value} warm-up; matmul "
            f"{result['matmul_gflops_before']:.0f} / {result['matmul_gflops_after']:.0f} "
            "GFLOP/s before / after")
  text = header + "\n\n" + table(result["rows"])
  print("\n" + text)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as f:
      json.dump(result, f, indent=2)
    with open(_OUT.value + ".md", "w") as f:
      f.write(f"`{result['command']}`\n\n{text}\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = ml_collections.ConfigDict(_CONFIG.value.to_dict())
  runtime.configure(config.fast_cpu_convolutions)
  torch_device = _torch_device() if _TORCH.value else None
  _check_flags(config)

  batch = _BATCH.value or config.batch_size
  bench = bench_rows.Bench(config, batch, _NUM_CLASSES.value)
  peak = peak_flops(jax.devices()[0])
  result = {"command": " ".join(["python -m kdjax.tools.bench", *sys.argv[1:]]),
            "machine": bench_rows.machine_info(), "batch": batch,
            "teacher_batch": _TEACHER_BATCH.value or batch, "teacher_size": _TEACHER_SIZE.value,
            "num_classes": _NUM_CLASSES.value, "student": config.model.to_dict(),
            "image_size": config.data.image_size, "optimizer": config.optimizer.to_dict(),
            "peak_flops": peak, "matmul_gflops_before": matmul_gflops(), "rows": []}
  rows = bench_rows.Rows(bench, _WARMUP.value, torch_device, _LAYOUTS.value)
  _build_rows(rows, batch)
  result["rows"] = _time_rows(rows.pending, peak)
  result["interleaved"] = _INTERLEAVE.value
  result["matmul_gflops_after"] = matmul_gflops()
  _report(result, config)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
