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
"""

import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from kdjax import models, optim, runtime, steps
from kdjax import sharding as shd
from kdjax.distill import objective, teacher_views
from kdjax.hf import pretrained
from kdjax.tools import torch_reference as ref

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (student, batch, "
                                          "optimizer, loss).", lock_config=True)
_ROWS = flags.DEFINE_list("rows", ["student", "teacher", "online", "cached"], "Rows to measure.")
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

ARCHITECTURES = {  # family -> (HF class, Hub checkpoint whose config.json shape is used, kwargs)
    "resnet50": ("ResNetForImageClassification", "microsoft/resnet-50", dict(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
        layer_type="bottleneck")),
    "vit_b16": ("ViTForImageClassification", "google/vit-base-patch16-224", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16)),
    "dinov2_b14": ("Dinov2Model", "facebook/dinov2-base", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
        image_size=518, patch_size=14, layerscale_value=1.0)),
    "clip_b16": ("CLIPVisionModelWithProjection", "openai/clip-vit-base-patch16", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu")),
    "mobilenet_v2": ("MobileNetV2ForImageClassification", "google/mobilenet_v2_1.0_224", dict(
        depth_multiplier=1.0, image_size=224, tf_padding=True)),
}
HEADLESS = ("dinov2_b14", "clip_b16")  # no classification head: no KD term, no logits
LOSSES = {  # name -> non-CE weights (every other distillation weight set to 0); None: as config
    "ce": {},
    "paper_a": dict(kd_weight=1.0, align_weight=1.0, unif_weight=1.0),
    "aft": dict(aft_weight=1.0),
    "feature_kd": dict(feature_kd_weight=1.0),
    "kd": dict(kd_weight=1.0),
    "config": None,
}
# Dense bf16 peak FLOP/s per device (vendors' data sheets; H100/H200: SXM, without sparsity).
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H100": 989.4e12, "NVIDIA H200": 989.4e12,
    "NVIDIA H100 PCIe": 756.0e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "TPU v6 lite": 918e12,
}


def peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  return PEAK_FLOPS.get(kind) or next(
      (v for k, v in PEAK_FLOPS.items() if kind.startswith(k) and k.startswith("NVIDIA")), None)


def time_calls(fn, steps: int, warmup: int) -> dict:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return {"seconds": statistics.median(times), "min_seconds": min(times), "all_seconds": times}


def interleaved(pending, steps: int) -> list[dict]:
  """Times every call of every row once per round, `steps` rounds: a machine whose speed drifts
  (shared CPUs, clocks, thermals) then slows every row alike, so rows and the kdjax/torch ratio
  within a row stay comparable. Returns per row {call name: time_calls-like record}."""
  samples = [{k: [] for k in calls} for *_, calls, _, _ in pending]
  for _ in range(steps):
    for (*_, calls, _, _), out in zip(pending, samples):
      for k, fn in calls.items():
        t = time.perf_counter()
        fn()
        out[k].append(time.perf_counter() - t)
  return [{k: {"seconds": statistics.median(v), "min_seconds": min(v), "all_seconds": v}
           for k, v in out.items()} for out in samples]


def save_random_teacher(family: str, directory: str, num_classes: int):
  """The family's architecture with random weights, saved as a Hub checkpoint directory; returns
  the PyTorch model (the reference)."""
  import torch
  import transformers

  cls_name, _, kwargs = ARCHITECTURES[family]
  cls = getattr(transformers, cls_name)
  kwargs = dict(kwargs)
  if family not in HEADLESS:
    kwargs["num_labels"] = num_classes
  torch.manual_seed(0)
  model = cls(cls.config_class(**kwargs)).eval()
  model.save_pretrained(directory)
  return model


def loss_config(config, name: str):
  import ml_collections

  loss = ml_collections.ConfigDict(config.loss.to_dict())
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
  if LOSSES[name] is not None:
    for term in ("kd", "align", "unif", "aft", "feature_kd"):
      loss[f"{term}_weight"] = 0.0
    loss.update(LOSSES[name])
  return loss


def machine_info() -> dict:
  import flax
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  d = jax.devices()[0]
  info = {"platform": d.platform, "device_kind": getattr(d, "device_kind", ""),
          "num_devices": jax.device_count(), "cpu": cpu, "cpus": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    pass
  return info


def matmul_gflops() -> float:
  """This machine's jitted 2048^2 float32 matmul speed now (CPU speeds here drift over time)."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((2048, 2048))
  mm = jax.jit(lambda a: a @ a)
  t = time_calls(lambda: mm(a).block_until_ready(), 5, 1)["seconds"]
  return 2 * 2048**3 / t / 1e9


class Bench:
  """Builds and times kdjax's jitted steps for one config (all rows share model and batch)."""

  def __init__(self, config, batch: int, num_classes: int):
    import jax


    self.config, self.batch, self.num_classes = config, batch, num_classes
    self.mesh = shd.make_mesh()
    shd.check_global_batch(batch, self.mesh, "--batch")
    self.repl, self.batch_sh = shd.replicated(self.mesh), shd.batch_sharding(self.mesh)
    self.model = models.build(config.model, num_classes)
    s = config.data.image_size
    self.image_shape = (s, s, 3)
    (_, out), _ = jax.eval_shape(
        lambda: self.model.init_with_output(jax.random.key(0), jax.numpy.zeros((1, s, s, 3))))
    self.student_features = int(out["pre_logits"].shape[-1])
    k1, k2 = jax.random.split(jax.random.key(1))
    self.batch_arrays = {
        "image": jax.device_put(jax.random.normal(k1, (batch, s, s, 3)), self.batch_sh),
        "label": jax.device_put(jax.random.randint(k2, (batch,), 0, num_classes), self.batch_sh)}

  def train_step(self, loss, views=(), mode="student", teacher_vars=()):
    """(one-call closure, XLA FLOPs per call) of the trainer's train step."""
    import jax


    config = self.config
    distiller = None
    if mode != "student":
      distiller = objective.Distiller(loss, list(views), self.num_classes, self.student_features,
                                    config.data.mean, config.data.std, cached=mode == "cached")
    tx = optim.build(config.optimizer, optim.schedule(config.optimizer, 1000, 100),
                          loss.prior_learning_rate)
    init = lambda key: steps.create_train_state(self.model, tx, self.image_shape, key,  # noqa: E731
                                                distiller=distiller)
    state = jax.jit(init, out_shardings=self.repl)(jax.random.key(0))
    step = jax.jit(steps.make_train_step(self.model, tx, loss, self.num_classes, distiller),
                   donate_argnums=0)
    batch = dict(self.batch_arrays)
    if mode == "cached":
      k1, k2 = jax.random.split(jax.random.key(2))
      batch["teacher_features"] = jax.device_put(jax.random.normal(
          k1, (self.batch, distiller.num_teacher_features)), self.batch_sh)
      if distiller.kd_teachers:
        batch["teacher_logits"] = jax.device_put(jax.random.normal(
            k2, (self.batch, 1, self.num_classes)), self.batch_sh)
    tv = list(teacher_vars) if mode == "online" else []
    key = jax.random.key(3)
    flops = steps.xla_flops(step, state, batch, key, {}, tv)
    holder = [state]

    def call():
      holder[0], metrics = step(holder[0], batch, key, {}, tv)
      jax.block_until_ready(metrics)

    return call, flops

  def teacher_forward(self, teacher, batch: int):
    import jax


    h, w = teacher.image_size
    x = jax.device_put(jax.random.normal(jax.random.key(4), (batch, h, w, 3)), self.batch_sh)
    forward = jax.jit(teacher.apply)
    flops = steps.xla_flops(forward, teacher.variables, x)
    return (lambda: jax.block_until_ready(forward(teacher.variables, x))), flops


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import ml_collections

  config = ml_collections.ConfigDict(_CONFIG.value.to_dict())

  runtime.configure(config.fast_cpu_convolutions)
  import jax


  use_torch = _TORCH.value
  if use_torch:
    import torch


    torch_device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else (
        "cpu")
    if torch_device == "cpu":
      torch.set_num_threads(os.cpu_count())
  for name in [*_ONLINE.value, *_CACHED.value]:
    loss_config(config, name)  # fails early on an unknown loss name
  unknown = sorted(set(_FAMILIES.value) - set(ARCHITECTURES))
  if unknown:
    raise app.UsageError(f"unknown families {unknown}; valid: {sorted(ARCHITECTURES)}")
  unknown = sorted(set(_ROWS.value) - {"student", "teacher", "online", "cached"})
  if unknown:
    raise app.UsageError(f"unknown rows {unknown}; valid: student, teacher, online, cached")

  batch = _BATCH.value or config.batch_size
  teacher_batch = _TEACHER_BATCH.value or batch
  bench = Bench(config, batch, _NUM_CLASSES.value)
  peak = peak_flops(jax.devices()[0])
  student_bf16 = config.model.dtype == "bfloat16"
  teacher_bf16 = config.teacher.dtype == "bfloat16"
  info = machine_info()
  result = {"command": " ".join(["python -m kdjax.tools.bench", *sys.argv[1:]]), "machine": info,
            "batch": batch,
            "teacher_batch": teacher_batch, "teacher_size": _TEACHER_SIZE.value,
            "num_classes": _NUM_CLASSES.value, "student": config.model.to_dict(),
            "image_size": config.data.image_size, "optimizer": config.optimizer.to_dict(),
            "peak_flops": peak, "matmul_gflops_before": matmul_gflops(), "rows": []}
  steps_, warmup = _STEPS.value, _WARMUP.value
  if warmup < 1:
    raise app.UsageError("--warmup must be >= 1: the first call compiles")
  layouts = _LAYOUTS.value

  pending = []  # rows built and warmed up; timed together at the end (interleaved)

  def measure(name, kind, n, call, flops, torch_calls=None, **extra):
    calls = {"kdjax": call, **{f"torch/{lay}": fn for lay, fn in (torch_calls or {}).items()}}
    for fn in calls.values():
      for _ in range(warmup):  # compiles and warms up now, times later
        fn()
    pending.append((name, kind, n, calls, flops, extra))
    print(f"built {name}", flush=True)

  def torch_step(layout, **kw):
    return ref.make_step(config, bench.num_classes, batch, device=torch_device,
                         channels_last=layout == "channels_last", bf16=student_bf16, **kw)

  if "student" in _ROWS.value:
    call, flops = bench.train_step(loss_config(config, "ce"))
    tc = {lay: torch_step(lay, weights={"ce": float(config.loss.ce_weight)})
          for lay in layouts} if use_torch else None
    measure(f"student {config.model.name} (CE)", "student", batch, call, flops, tc)

  needs_teachers = {"teacher", "online", "cached"} & set(_ROWS.value)
  with tempfile.TemporaryDirectory() as tmp:
    for i, family in enumerate(_FAMILIES.value if needs_teachers else []):
      path = os.path.join(tmp, family)
      torch_model = save_random_teacher(family, path, bench.num_classes)
      teacher = pretrained.load(path, dtype=config.teacher.dtype, mesh=bench.mesh)
      size = (_TEACHER_SIZE.value,) * 2
      teacher.preprocess = dataclasses.replace(teacher.preprocess, crop=None,
                                               resize=("square", size))
      view = teacher_views.view_of(teacher)
      checkpoint = ARCHITECTURES[family][1]
      if "teacher" in _ROWS.value:
        call, flops = bench.teacher_forward(teacher, teacher_batch)
        tc = {"nchw": ref.make_teacher_forward(torch_model, teacher_batch, size, torch_device,
                                               teacher_bf16)} if use_torch else None
        measure(f"teacher {family} forward", "teacher", teacher_batch, call, flops, tc,
                family=family, checkpoint=checkpoint)
      for loss_name in _ONLINE.value if "online" in _ROWS.value else []:
        loss = _for_teacher(loss_config(config, loss_name), family)
        call, flops = bench.train_step(loss, [view], "online", [teacher.variables])
        tc = {layouts[0]: torch_step(layouts[0], weights=objective.weights(loss),
                                     teacher=torch_model, view=view)} if use_torch else None
        measure(f"{loss_name}, {family} online", "online", batch, call, flops, tc,
                family=family, loss=objective.weights(loss))
      for loss_name in _CACHED.value if "cached" in _ROWS.value and i == 0 else []:
        loss = _for_teacher(loss_config(config, loss_name), family)
        call, flops = bench.train_step(loss, [view], "cached")
        dims = (view.num_features, family not in HEADLESS and "kd" in objective.weights(loss))
        tc = {layouts[0]: torch_step(layouts[0], weights=objective.weights(loss),
                                     cached_dims=dims)} if use_torch else None
        measure(f"{loss_name}, {family} cached", "cached", batch, call, flops, tc,
                family=family, loss=objective.weights(loss))
      del torch_model, teacher
  times = interleaved(pending, steps_) if _INTERLEAVE.value else [
      {k: time_calls(fn, steps_, 0) for k, fn in calls.items()} for *_, calls, _, _ in pending]
  for (name, kind, n, _, flops, extra), t in zip(pending, times):
    tt = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("torch/")}
    r = row_record(name, kind, n, t["kdjax"], flops, peak, tt, **extra)
    result["rows"].append(r)
    print(json.dumps({k: v for k, v in r.items() if k not in ("kdjax", "torch")}
                     | {"kdjax_ms": round(t["kdjax"]["seconds"] * 1e3, 1),
                        "torch_ms": {lay: round(v["seconds"] * 1e3, 1) for lay, v in tt.items()}}),
          flush=True)
  result["interleaved"] = _INTERLEAVE.value
  result["matmul_gflops_after"] = matmul_gflops()

  header = (f"{info['platform']} {info['device_kind']} x{info['num_devices']} ({info['cpu']}, "
            f"{info['cpus']} CPUs), jax {info['jax']}, torch {info.get('torch', '-')}; student "
            f"{config.model.name} at {config.data.image_size} px, {config.model.dtype}; "
            f"teachers at {_TEACHER_SIZE.value} px, {config.teacher.dtype}; median of "
            f"{steps_} steps after {warmup} warm-up; matmul {result['matmul_gflops_before']:.0f}"
            f" / {result['matmul_gflops_after']:.0f} GFLOP/s before / after")
  text = header + "\n\n" + table(result["rows"])
  print("\n" + text)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as f:
      json.dump(result, f, indent=2)
    with open(_OUT.value + ".md", "w") as f:
      f.write(f"`{result['command']}`\n\n{text}\n")


def _for_teacher(loss, family):
  """KD needs a task head: headless families (DINOv2, CLIP) drop the KD term."""
  if family in HEADLESS:
    loss.kd_weight = 0.0
  return loss


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
