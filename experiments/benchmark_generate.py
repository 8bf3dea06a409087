r"""Synthetic-image generation throughput: kdjax.generate's jitted sampler on random weights.

  python experiments/benchmark_generate.py --arch=tiny --out=generate_cpu_tiny.json
  python experiments/benchmark_generate.py --arch=sd-v1 --resolution=512 --batch=8 \
      --dtype=bfloat16 --out=generate_gpu_sd_v1_512.json        # on a GPU

The sampler is the one `python -m kdjax.generate` runs (text encoder, `steps` scheduler steps
with classifier-free guidance, VAE decode, resize, uint8), jitted over a global batch sharded on
all devices; the pipeline is built by `random_pipeline.save_random_pipeline` (`tiny`: the test
pipeline, 16 px; `sd-v1`: Stable Diffusion v1's architecture with random weights). Compilation
is excluded (one warm-up batch); the figure is the median over `repeats` batches. FLOPs per
image come from XLA's cost analysis of the same program (one and two steps lowered, extrapolated
to all steps: XLA counts a loop body once); hours per 1,000 images follow.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--arch", default="tiny", choices=["tiny", "sd-v1"])
  p.add_argument("--resolution", type=int, default=0, help="0: 16 (tiny) / 512 (sd-v1)")
  p.add_argument("--image_size", type=int, default=0, help="stored size; 0: resolution")
  p.add_argument("--steps", type=int, default=25)
  p.add_argument("--guidance", type=float, default=7.5)
  p.add_argument("--scheduler", default="dpm_multistep")
  p.add_argument("--batch", type=int, default=8, help="per device")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--pipeline_dir", default="", help="reuse a saved random pipeline")
  p.add_argument("--out", default="")
  args = p.parse_args()

  from kdjax import runtime
  runtime.configure(True)
  import jax
  import ml_collections
  import numpy as np

  from kdjax import sharding as shd
  from kdjax.generate import pipeline, random_pipeline, sampler

  directory = args.pipeline_dir or tempfile.mkdtemp()
  if not os.path.exists(os.path.join(directory, "unet", "config.json")):
    t = time.perf_counter()
    random_pipeline.save_random_pipeline(directory, args.arch)
    print(f"random {args.arch} pipeline saved in {time.perf_counter() - t:.1f} s: {directory}")
  resolution = args.resolution or (16 if args.arch == "tiny" else 512)
  synth = ml_collections.ConfigDict({
      "resolution": resolution, "num_inference_steps": args.steps,
      "guidance_scale": args.guidance, "resize_method": "lanczos3"})
  pipe = pipeline.load_pipeline(pipeline.resolve(directory, None), args.scheduler, args.dtype)
  mesh = shd.make_mesh()
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  global_batch = args.batch * mesh.devices.size
  sample, params = sampler.sharded_sampler(pipe, synth, args.image_size or resolution, mesh)
  prompts = [f"a picture of a class {i}" for i in range(global_batch)]
  ids = shd.global_from_host(pipeline.tokenize(pipe, prompts), batch_sh)
  negative = shd.global_from_host(pipeline.tokenize(pipe, [""]), repl)

  def seeds(i):
    return shd.global_from_host(np.arange(i * global_batch, (i + 1) * global_batch,
                                          dtype=np.int32), batch_sh)

  flops = sampler.sampler_flops(pipe, synth, args.image_size or resolution, params, ids,
                                negative, seeds(0))
  t = time.perf_counter()
  jax.block_until_ready(sample(params, ids, negative, seeds(0)))
  compile_s = time.perf_counter() - t
  times = []
  for i in range(args.repeats):
    t = time.perf_counter()
    jax.block_until_ready(sample(params, ids, negative, seeds(i + 1)))
    times.append(time.perf_counter() - t)
  batch_s = float(np.median(times))
  rate = global_batch / batch_s
  result = {
      "arch": args.arch, "resolution": resolution, "image_size": args.image_size or resolution,
      "steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler,
      "dtype": args.dtype, "global_batch": global_batch, "devices": mesh.devices.size,
      "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
      "jax": jax.__version__, "first_batch_s_incl_compile": compile_s,
      "batch_s_median": batch_s, "batch_s_all": times, "images_per_s": rate,
      "hours_per_1000_images": 1000 / rate / 3600, "flops_per_image": flops / global_batch,
      "achieved_tflops": flops / batch_s / 1e12,
      "command": "python experiments/benchmark_generate.py " + " ".join(sys.argv[1:]),
  }
  print(f"{args.arch} {resolution}px {args.steps} steps ({args.scheduler}, guidance "
        f"{args.guidance}) {args.dtype}, batch {global_batch} on {mesh.devices.size} "
        f"{result['platform']} device(s): {rate:.3f} images/s, "
        f"{result['hours_per_1000_images']:.3f} h per 1,000 images, "
        f"{result['flops_per_image'] / 1e9:.2f} GFLOP/image, "
        f"{result['achieved_tflops']:.3f} TFLOP/s (compile + first batch {compile_s:.1f} s)")
  if args.out:
    os.makedirs(os.path.join(REPO, "experiments", "results"), exist_ok=True)
    path = os.path.join(REPO, "experiments", "results", args.out)
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
