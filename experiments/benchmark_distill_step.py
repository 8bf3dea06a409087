r"""Distillation step cost: student alone vs cached teacher outputs vs the teacher run online.

  python experiments/benchmark_distill_step.py --batch=128 --out=distill_step.json

The same jitted train step the trainer runs (kdjax/steps.py + kdjax/distill.py), on a fixed
batch (input pipeline excluded): ResNet-18 (CIFAR stem) student at 32 px, a ResNet-50-shaped
teacher (random weights, the real architecture, built as a Hugging Face checkpoint and loaded
through kdjax.teachers) at 224 px, paper B's loss (CE + AFT) and paper A's (CE + KD + align +
unif). Cached: the batch carries the teacher's features/logits (what teacher_cache.py feeds);
online: the teacher runs inside the step. Target (developers' brief): cached within 10% of the
student-only step. Prints a table and writes JSON (seconds per step, XLA FLOPs, ratios).
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmark_student_step import _median_time  # noqa: E402  (this folder is on sys.path)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--teacher_size", type=int, default=224)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--skip_online", action="store_true", help="the online teacher is slow on CPU")
  p.add_argument("--out", default="")
  args = p.parse_args()

  from kdjax import runtime
  runtime.configure(True)
  import jax
  import ml_collections
  import torch
  import transformers

  from kdjax import configlib, distill, models, optim, steps, teachers

  torch.manual_seed(0)
  hf = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=10))
  directory = tempfile.mkdtemp()
  hf.eval().save_pretrained(directory)
  teacher = teachers.load(directory)
  teacher.preprocess = dataclasses.replace(teacher.preprocess, crop=None,
                                           resize=("square", (args.teacher_size,) * 2))
  view = distill.view_of(teacher)

  config = configlib.base()
  model = models.build_student(config.model, 10)
  s = args.image_size
  batch = {"image": jax.random.normal(jax.random.key(1), (args.batch, s, s, 3)),
           "label": jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)}
  cached_batch = dict(batch,
                      teacher_features=jax.random.normal(jax.random.key(3),
                                                         (args.batch, view.num_features)),
                      teacher_logits=jax.random.normal(jax.random.key(4), (args.batch, 1, 10)))
  key = jax.random.key(5)
  results = {"batch": args.batch, "image_size": s, "teacher_size": args.teacher_size,
             "devices": str(jax.devices()[0]), "rows": {}}

  def measure(name, loss_overrides, mode):
    loss = ml_collections.ConfigDict(config.loss.to_dict())
    loss.update(loss_overrides)
    distiller = None
    if mode != "student":
      distiller = distill.Distiller(loss, [view], 10, 512, config.data.mean, config.data.std,
                                    cached=mode == "cached")
    tx = optim.build(config.optimizer, optim.schedule(config.optimizer, 1000, 100),
                     loss.prior_learning_rate)
    state = steps.create_train_state(model, tx, (s, s, 3), jax.random.key(0),
                                     distiller=distiller)
    step = jax.jit(steps.make_train_step(model, tx, loss, 10, distiller), donate_argnums=0)
    b = cached_batch if mode == "cached" else batch
    tv = [teacher.variables] if mode == "online" else []
    flops = step.lower(state, b, key, {}, tv).cost_analysis()["flops"]
    holder = [state]

    def one():
      holder[0], metrics = step(holder[0], b, key, {}, tv)
      jax.block_until_ready(metrics)

    for _ in range(args.warmup):
      one()
    seconds = _median_time(one, args.steps)
    results["rows"][name] = {"seconds_per_step": seconds, "images_per_s": args.batch / seconds,
                             "xla_flops_per_step": flops}
    print(f"{name:28s} {seconds * 1e3:9.1f} ms/step {args.batch / seconds:8.1f} img/s "
          f"{flops:10.3g} FLOPs", flush=True)

  aft = {"aft_weight": 1.0}
  paper_a = {"kd_weight": 1.0, "align_weight": 1.0, "unif_weight": 1.0}
  measure("student only (CE)", {}, "student")
  measure("AFT, cached teacher", aft, "cached")
  measure("paper A, cached teacher", paper_a, "cached")
  if not args.skip_online:
    measure("AFT, online teacher", aft, "online")
    measure("paper A, online teacher", paper_a, "online")
  base = results["rows"]["student only (CE)"]["seconds_per_step"]
  for row in results["rows"].values():
    row["time_vs_student"] = row["seconds_per_step"] / base
  print("\n| step | ms/step | img/s | time vs student-only | XLA FLOPs |\n"
        "| --- | ---: | ---: | ---: | ---: |")
  for name, row in results["rows"].items():
    print(f"| {name} | {row['seconds_per_step'] * 1e3:.1f} | {row['images_per_s']:.1f} | "
          f"{row['time_vs_student']:.3f}x | {row['xla_flops_per_step']:.3g} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
