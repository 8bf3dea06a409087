r"""Training-cost accounting, paper A's question: what did distillation cost against
pre-training the same student on ImageNet and fine-tuning it on the task?

  python -m kdjax.tools.cost --workdir=runs/r18_cifar [--out=cost_accounting.json]

Distillation, as run (from the run's cost.json, XLA-counted FLOPs and measured wall time):
  the student run (train + eval steps, teachers online inside its steps) + the teacher cache
  (cached mode) + every teacher that is itself a kdjax run (a linear-probe adaptation from
  configs/adapt.py, or a teacher trained from scratch as in the offline demo): its cost.json.
  A public pre-trained teacher's own pre-training is not counted: someone else paid it once
  for every user, which is the premise of paper A.
Pre-train then fine-tune, the alternative (FLOPs computed, wall time estimated):
  pre-train: the same student architecture with its ImageNet layout (ResNet's 7x7/2 stem +
  max-pool; MobileNetV2's standard strides), 1,000 classes, 224 px, trained with the standard
  ImageNet recipe (RECIPES: torchvision's reference scripts) = XLA's count of kdjax's CE train
  step per image x 1,281,167 ImageNet-1k training images x epochs;
  fine-tune: the same student trained on the task with this run's steps, batch and image size,
  CE only (the run's own step without the teachers), plus the same evaluations.
  Wall time of the pre-training is an estimate: its FLOPs at the FLOP/s this run achieved.
Saved = 1 - distillation / (pre-train + fine-tune).
"""

import json
import os

from absl import app, flags

from kdjax import configlib, models, optim, runtime, steps
from kdjax.data import sources

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k (ILSVRC 2012) training split
# Epochs of the standard recipe per student. Source: torchvision's reference training scripts
# (github.com/pytorch/vision, references/classification): train.py's default --epochs 90 for the
# ResNets (torchvision's resnet18/34 IMAGENET1K_V1 weights), README "MobileNetV2": --epochs 300.
RECIPES = {
    "resnet18": {"epochs": 90, "source": "torchvision references/classification, train.py "
                 "defaults (90 epochs, 224 px random-resized crops)"},
    "resnet34": {"epochs": 90, "source": "torchvision references/classification, train.py "
                 "defaults (90 epochs, 224 px random-resized crops)"},
    "mobilenet_v2": {"epochs": 300, "source": "torchvision references/classification README, "
                     "MobileNetV2: --epochs 300 --lr 0.045 --wd 0.00004"},
}


def train_flops_per_image(model_cfg, image_size: int, num_classes: int, batch: int = 8) -> float:
  """XLA's count of one CE train step (forward, backward, SGD update) per image."""
  import jax
  import ml_collections


  model = models.build(model_cfg, num_classes)
  opt = configlib.base().optimizer
  tx = optim.build(opt, optim.schedule(opt, 1000, 100))
  shape = (image_size, image_size, 3)
  state = jax.eval_shape(lambda k: steps.create_train_state(model, tx, shape, k),
                         jax.random.key(0))
  loss = ml_collections.ConfigDict({"ce_weight": 1.0, "label_smoothing": 0.0})
  step = jax.jit(steps.make_train_step(model, tx, loss, num_classes))
  batch_spec = {"image": jax.ShapeDtypeStruct((batch, *shape), "float32"),
                "label": jax.ShapeDtypeStruct((batch,), "int32")}
  return steps.xla_flops(step, state, batch_spec, jax.random.key(1), {}, []) / batch


def imagenet_pretraining(model_cfg) -> dict:
  """FLOPs of pre-training this student on ImageNet-1k with the standard recipe."""
  import ml_collections

  name = model_cfg.name
  if name not in RECIPES:
    raise ValueError(f"no ImageNet recipe recorded for student {name!r}; known: {sorted(RECIPES)}")
  cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  cfg.stem, cfg.cifar_strides, cfg.pretrained = "imagenet", False, ""
  cfg.freeze_backbone, cfg.conv_impl = False, "xla"
  per_image = train_flops_per_image(cfg, 224, 1000)
  recipe = RECIPES[name]
  return {"flops_per_image": per_image, "images": IMAGENET_TRAIN_IMAGES,
          "epochs": recipe["epochs"], "source": recipe["source"],
          "flops": per_image * IMAGENET_TRAIN_IMAGES * recipe["epochs"]}


def _read(path):
  with open(path) as f:
    return json.load(f)


def account(workdir: str) -> dict:
  """The accounting for a finished (or checkpointed) kdjax run directory."""
  import ml_collections

  workdir = os.path.abspath(workdir)
  for name in ("cost.json", "config.json"):
    if not os.path.isfile(os.path.join(workdir, name)):
      raise FileNotFoundError(f"{workdir} has no {name}: pass a finished kdjax run directory")
  cost = _read(os.path.join(workdir, "cost.json"))
  config = ml_collections.ConfigDict(_read(os.path.join(workdir, "config.json")))
  if config.model.pretrained:
    raise ValueError(f"{workdir} fine-tuned a pre-trained student: it is the alternative, not a "
                     "distillation run")
  steps_done = round(cost["train_flops"] / cost["flops_per_train_step"])
  parts = [{"what": "student run (train + eval)", "flops": cost["total_flops"],
            "wall_time_s": cost["wall_time_s"]}]
  if cost.get("teacher_cache_flops"):
    parts.append({"what": "teacher cache", "flops": cost["teacher_cache_flops"],
                  "wall_time_s": cost.get("teacher_cache_wall_time_s", 0.0)})
  records = (_read(os.path.join(workdir, "teachers.json"))
             if os.path.isfile(os.path.join(workdir, "teachers.json")) else [])
  for r in records:
    run_cost = os.path.join(str(r.get("source", "")), "cost.json")
    if not r.get("hub") and os.path.isfile(run_cost):
      c = _read(run_cost)
      parts.append({"what": f"teacher run {r['source']} (adaptation or training)",
                    "flops": c["total_flops"] + c.get("teacher_cache_flops", 0.0),
                    "wall_time_s": c["wall_time_s"] + c.get("teacher_cache_wall_time_s", 0.0)})
  distillation = {"flops": sum(p["flops"] for p in parts),
                  "wall_time_s": sum(p["wall_time_s"] for p in parts), "parts": parts}

  pre = imagenet_pretraining(config.model)
  num_classes = _num_classes(config)
  finetune_step = train_flops_per_image(
      config.model, config.data.image_size, num_classes, config.batch_size) * config.batch_size
  finetune_flops = finetune_step * steps_done + cost["eval_flops"]
  rate = cost["train_flops"] / max(cost["wall_time_s"], 1e-9)  # this run's achieved FLOP/s
  alternative = {
      "flops": pre["flops"] + finetune_flops,
      "pretrain": pre, "finetune_flops": finetune_flops, "finetune_steps": steps_done,
      "wall_time_s_estimate": (pre["flops"] + finetune_flops) / rate,
      "wall_time_basis": f"FLOPs at this run's achieved {rate / 1e9:.1f} GFLOP/s"}
  return {"workdir": workdir, "student": config.model.name, "distillation": distillation,
          "pretrain_then_finetune": alternative,
          "flops_saved_fraction": 1.0 - distillation["flops"] / alternative["flops"],
          "wall_time_saved_fraction_estimate":
              1.0 - distillation["wall_time_s"] / alternative["wall_time_s_estimate"]}


def _num_classes(config) -> int:
  """The task's class count, from its dataset's metadata (no image is read)."""

  return sources.dataset_builder(config.data).info.features["label"].num_classes


def table(a: dict) -> str:
  d, alt = a["distillation"], a["pretrain_then_finetune"]
  pre = alt["pretrain"]
  hours = lambda s: f"{s / 3600:.3g} h"  # noqa: E731
  lines = ["| | FLOPs | wall time |", "| --- | ---: | ---: |"]
  for p in d["parts"]:
    lines.append(f"| distillation: {p['what']} | {p['flops']:.3g} | {hours(p['wall_time_s'])} |")
  lines += [
      f"| **distillation, total** | **{d['flops']:.3g}** | **{hours(d['wall_time_s'])}** |",
      f"| pre-train {a['student']} on ImageNet ({pre['epochs']} epochs x {pre['images']:,} "
      f"images x {pre['flops_per_image']:.3g} FLOPs) | {pre['flops']:.3g} | "
      f"{hours(pre['flops'] / alt['flops'] * alt['wall_time_s_estimate'])} (est.) |",
      f"| fine-tune on the task ({alt['finetune_steps']} steps, CE) | "
      f"{alt['finetune_flops']:.3g} | - |",
      f"| **pre-train + fine-tune, total** | **{alt['flops']:.3g}** | "
      f"**{hours(alt['wall_time_s_estimate'])}** (est.) |",
      f"| **saved by distillation** | **{a['flops_saved_fraction']:.2%}** "
      f"({alt['flops'] / d['flops']:.3g}x fewer) | "
      f"**{a['wall_time_saved_fraction_estimate']:.2%}** (est.) |"]
  return "\n".join(lines) + (f"\n\nPre-training recipe: {pre['source']}. Estimated wall time: "
                             f"{alt['wall_time_basis']}.")


_WORKDIR = flags.DEFINE_string("workdir", None, "A finished kdjax run directory.")
_OUT = flags.DEFINE_string("out", "", "Also write the accounting as JSON here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  runtime.configure(True)
  runtime.quiet_libraries()
  a = account(_WORKDIR.value)
  print(table(a))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(a, f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
