r"""Teacher forward throughput at 224 px: kdjax's Flax ports beside the HF PyTorch models.

  pip install -r requirements-dev.txt     # torch==2.13.0 + transformers==4.57.6 (the reference)
  python experiments/benchmark_teachers.py --batch=8 --out=experiments/results/teachers_cpu.json
  python experiments/benchmark_teachers.py --batch=256 --dtype=bfloat16 --out=teachers_gpu.json

Each family is built at its real size (the config.json values of the Hub checkpoint named in
ARCHITECTURES) with random weights by transformers, saved as safetensors and loaded through
`kdjax.teachers.load`: the same path as a downloaded checkpoint, no network needed. Timed: the
jitted forward pass (eval mode) on a fixed batch, median of `--steps` calls after warm-up; torch:
the eager HF model under `torch.no_grad()` (fp32 on CPU with all cores; bf16 autocast on GPU).
FLOPs come from XLA's cost analysis of the compiled forward; MFU is printed when the device's
peak is in PEAK_FLOPS. Writes JSON with every figure and prints a markdown table.
"""

import argparse
import json
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kdjax import runtime  # noqa: E402

runtime.configure(fast_cpu_convolutions=True)  # before JAX starts, as kdjax.main does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from benchmark_student_step import _median_time  # noqa: E402  (this folder is on sys.path)

ARCHITECTURES = {  # name -> (HF class, config.json of the Hub checkpoint, input size)
    "resnet50": ("ResNetForImageClassification", "microsoft/resnet-50", dict(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
        layer_type="bottleneck", num_labels=1000)),
    "vit_b16": ("ViTForImageClassification", "google/vit-base-patch16-224", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16, num_labels=1000)),
    "dinov2_b14": ("Dinov2Model", "facebook/dinov2-base", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
        image_size=518, patch_size=14, layerscale_value=1.0)),
    "clip_b16": ("CLIPVisionModelWithProjection", "openai/clip-vit-base-patch16", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu")),
    "mobilenet_v2": ("MobileNetV2ForImageClassification", "google/mobilenet_v2_1.0_224", dict(
        depth_multiplier=1.0, image_size=224, tf_padding=True, num_labels=1001)),
}
PEAK_FLOPS = {  # dense bf16 peak per device, from the vendors' data sheets
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
}


def save_random(name, directory):
  """The architecture with random weights, saved as a Hub checkpoint directory would be."""
  import torch
  import transformers

  cls_name, _, kwargs = ARCHITECTURES[name]
  cls = getattr(transformers, cls_name)
  config_cls = cls.config_class
  torch.manual_seed(0)
  model = cls(config_cls(**kwargs)).eval()
  model.save_pretrained(directory)
  return model


def bench_kdjax(path, batch, size, dtype, steps, warmup):
  from kdjax import teachers

  teacher = teachers.load(path, dtype=dtype)
  x = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)
  forward = jax.jit(teacher.apply)
  compiled = forward.lower(teacher.variables, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  flops = float(analysis.get("flops", 0.0))
  run = lambda: jax.block_until_ready(forward(teacher.variables, x))  # noqa: E731
  for _ in range(warmup):
    run()
  seconds = _median_time(run, steps)
  return {"seconds": seconds, "images_per_s": batch / seconds, "flops": flops,
          "flops_per_s": flops / seconds}


def bench_torch(model, batch, size, dtype, steps, warmup):
  import torch

  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_num_threads(os.cpu_count())
  model = model.to(device)
  x = torch.randn(batch, 3, size, size, device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def run():
    with torch.no_grad(), autocast:
      model(pixel_values=x)
    if device == "cuda":
      torch.cuda.synchronize()

  for _ in range(warmup):
    run()
  seconds = _median_time(run, steps)
  return {"seconds": seconds, "images_per_s": batch / seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--families", default=",".join(ARCHITECTURES))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--torch", type=int, default=1, help="1: also time the HF PyTorch model")
  parser.add_argument("--out", default="")
  args = parser.parse_args()

  device = jax.devices()[0]
  peak = PEAK_FLOPS.get(getattr(device, "device_kind", ""))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.families.split(","):
      path = os.path.join(tmp, name)
      model = save_random(name, path)
      row = {"family": name, "checkpoint": ARCHITECTURES[name][1], "batch": args.batch,
             "image_size": args.image_size, "dtype": args.dtype,
             "kdjax": bench_kdjax(path, args.batch, args.image_size, args.dtype, args.steps,
                                  args.warmup)}
      if peak:
        row["kdjax"]["mfu"] = row["kdjax"]["flops_per_s"] / peak
      if args.torch:
        row["torch"] = bench_torch(model, args.batch, args.image_size, args.dtype, args.steps,
                                   args.warmup)
        row["ratio_kdjax_over_torch"] = (row["kdjax"]["images_per_s"]
                                         / row["torch"]["images_per_s"])
      rows.append(row)
      print(json.dumps(row), flush=True)
      del model

  print(f"\n{device.platform} {getattr(device, 'device_kind', '')}, jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs, batch {args.batch}, {args.image_size} px, {args.dtype}\n")
  print("| teacher | kdjax img/s | GFLOP/img | achieved GFLOP/s | MFU | torch img/s | ratio |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    k, t = r["kdjax"], r.get("torch", {})
    mfu = f"{k['mfu']:.1%}" if "mfu" in k else "-"
    torch_ips = f"{t['images_per_s']:.1f}" if t else "-"
    ratio = f"{r['ratio_kdjax_over_torch']:.2f}x" if t else "-"
    print(f"| {r['family']} ({r['checkpoint']}) | {k['images_per_s']:.1f} | "
          f"{k['flops'] / r['batch'] / 1e9:.2f} | {k['flops_per_s'] / 1e9:.1f} | {mfu} | "
          f"{torch_ips} | {ratio} |")
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"machine": {"platform": device.platform,
                             "device_kind": getattr(device, "device_kind", ""),
                             "cpu": platform.processor() or platform.machine(),
                             "cpus": os.cpu_count(), "jax": jax.__version__},
                 "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
