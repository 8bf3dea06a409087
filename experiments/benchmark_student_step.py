r"""Student train-step throughput: kdjax (jit) beside PyTorch eager, same step, same machine.

  pip install -r requirements-bench.txt   # torch==2.13.0 (CPU wheel) for the reference
  python experiments/benchmark_student_step.py --image_size=32 --batch=128 --out=bench.json

One "step" is what kdjax's trainer runs: forward in train mode (BatchNorm batch statistics),
cross-entropy, backward, SGD+Nesterov momentum with weight decay, on a fixed batch (input
pipeline excluded on both sides). kdjax variants differ only in the CPU convolution settings
(kdjax/runtime.py, kdjax/models/cpu_conv.py), each in its own process since XLA reads its flags
at start-up. Torch: kdjax/tools/torch_reference.py's twin of the student (torch.nn, no
torchvision), fp32, channels_last and contiguous NCHW, `torch.set_num_threads(os.cpu_count())`.
(`python -m kdjax.tools.bench` measures the same student step, and the distillation steps, with
kdjax's defaults only.)

Prints a table and writes JSON with every timing, the ratio kdjax/torch in images/s (>1: kdjax
faster) and a matmul GFLOP/s calibration (this machine's speed drifts ~2x over time, so only
figures from one invocation are compared).
"""

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {  # name -> (fast_cpu_convolutions flag, model.conv_impl)
    "kdjax": (True, "cpu"),  # the default: Eigen conv flag + kdjax.models.cpu_conv
    "kdjax_flag_only": (True, "xla"),  # Eigen conv flag, XLA's own conv lowering
    "plain_xla": (False, "xla"),  # no kdjax CPU changes (what a plain Flax script gets)
}


def _median_time(fn, steps):
  from kdjax.tools.bench_rows import time_calls

  return time_calls(fn, steps, 0)["seconds"]


def run_kdjax(args):
  """Runs inside a child process whose XLA flags are already set."""
  sys.path.insert(0, REPO)
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import jax
  import jax.numpy as jnp
  import resnet18_cifar

  from kdjax import models, optim, steps

  config = resnet18_cifar.get_config()
  config.model.name, config.model.conv_impl = args.model, args.conv_impl
  model = models.build(config.model, 10)
  tx = optim.build(config.optimizer, optim.schedule(config.optimizer, 1000, 100))
  state = steps.create_train_state(model, tx, (args.image_size, args.image_size, 3),
                                   jax.random.key(0))
  step = jax.jit(steps.make_train_step(model, tx, config.loss, 10), donate_argnums=0)
  batch = {"image": jax.random.normal(jax.random.key(1), (args.batch, args.image_size,
                                                         args.image_size, 3)),
           "label": jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)}
  key = jax.random.key(3)
  flops = step.lower(state, batch, key, {}).cost_analysis()["flops"]
  holder = [state]

  def one():
    holder[0], metrics = step(holder[0], batch, key, {})
    jax.block_until_ready(metrics)

  for _ in range(args.warmup):
    one()
  seconds = _median_time(one, args.steps)
  a = jnp.ones((2048, 2048))
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  mm_s = _median_time(lambda: mm(a).block_until_ready(), 5)
  print(json.dumps({"seconds_per_step": seconds, "xla_flops_per_step": flops,
                    "matmul_gflops": 2 * 2048**3 / mm_s / 1e9,
                    "xla_flags": os.environ.get("XLA_FLAGS", "")}))


def run_torch(args, channels_last: bool):
  """The same step in PyTorch eager: kdjax's reference (kdjax/tools/torch_reference.py)."""
  import torch

  sys.path.insert(0, os.path.join(REPO, "configs"))
  import resnet18_cifar

  from kdjax.tools import torch_reference

  torch.set_num_threads(os.cpu_count())
  config = resnet18_cifar.get_config("arm=scratch")
  config.model.name, config.data.image_size = args.model, args.image_size
  step = torch_reference.make_step(config, 10, args.batch, {"ce": 1.0},
                                   channels_last=channels_last)
  for _ in range(args.warmup):
    step()
  return _median_time(step, args.steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help="comma-separated subset of the kdjax variants")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--out", default="")
  parser.add_argument("--child_conv_impl", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child_conv_impl:
    args.conv_impl = args.child_conv_impl
    return run_kdjax(args)

  sys.path.insert(0, REPO)
  from kdjax import runtime

  results = {"image_size": args.image_size, "batch": args.batch, "model": args.model,
             "cpu_count": os.cpu_count(), "kdjax": {}, "torch": {}}
  for name in args.variants.split(","):
    flag, conv_impl = VARIANTS[name]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (runtime.with_cpu_flags(env.get("XLA_FLAGS", "")) if flag
                        else env.get("XLA_FLAGS", ""))
    cmd = [sys.executable, __file__, f"--image_size={args.image_size}", f"--batch={args.batch}",
           f"--model={args.model}", f"--steps={args.steps}", f"--warmup={args.warmup}",
           f"--child_conv_impl={conv_impl}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    results["kdjax"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
  if not args.no_torch:
    import torch

    results["torch_version"] = torch.__version__
    for layout, cl in (("channels_last", True), ("NCHW", False)):
      results["torch"][layout] = {"seconds_per_step": run_torch(args, cl)}
  best_torch = min((v["seconds_per_step"] for v in results["torch"].values()), default=None)
  print(f"\n{args.model}, {args.image_size} px, batch {args.batch}, {os.cpu_count()} cores")
  print(f"{'variant':45s} {'ms/step':>9s} {'img/s':>8s} {'vs best torch':>14s}")
  rows = [(k, v["seconds_per_step"]) for k, v in results["kdjax"].items()]
  rows += [(f"torch {results.get('torch_version', '')} eager, {k}", v["seconds_per_step"])
           for k, v in results["torch"].items()]
  for name, sec in rows:
    ratio = f"{best_torch / sec:.2f}x" if best_torch else "-"
    print(f"{name:45s} {sec * 1e3:9.0f} {args.batch / sec:8.1f} {ratio:>14s}")
    if name in results["kdjax"]:
      results["kdjax"][name]["speed_vs_best_torch"] = best_torch / sec if best_torch else None
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
