r"""Paper A's grid (Farhat & Chen, arXiv 2404.03263), end to end, and its table next to ours.

  python experiments/paper_a.py run --root=runs/paper_a --dry_run    # print the commands, run none
  python experiments/paper_a.py run --root=runs/paper_a [--teachers=resnet50,vit_b16]
      [--students=resnet18,mobilenet_v2] [--tasks=cifar10,...] [--arms=distill,scratch,finetune]
      [--seeds=0,1,2] [--set data.data_dir=/data/tfds] [--keep_going]
  python experiments/paper_a.py collect --root=runs/paper_a   # -> ROOT/results.json, results.md

Per task, in order: step 1 adapts each teacher (`adapt_<teacher>_<task>`: configs/adapt.py, a
linear probe of a new head on the frozen ImageNet backbone, once per teacher and task, seed 0),
step 2 trains the arms per student and seed (configs/paper_a.py): `distill_<teacher>_<student>_
<task>_s<seed>` (teacher_dir = the adapted teacher), `scratch_<student>_<task>_s<seed>` and
`finetune_<student>_<task>_s<seed>` (neither uses a teacher: one run serves both teachers).
Each step is one `python -m kdjax.main --config=... --workdir=ROOT/<name>` command, run as a
subprocess from the current directory (log: ROOT/logs/<name>.log). A step whose workdir holds
`cost.json` is finished (kdjax/train/trainer.py writes it once, after the final evaluation) and is
skipped; any other step is started, and an interrupted one resumes from its last checkpoint.
`--set KEY=VALUE` appends `--config.KEY=VALUE` to every command (all configs share one schema).
`run` ends with `collect`, which reads every finished run's final evaluation from its
metrics.jsonl (test accuracy; validation where the task has no test split: caltech101) into
ROOT/results.json and a markdown table with the paper's reported number next to ours
(experiments/paper_numbers.py; "not reported" where our sources give none: all cells today).
`--dry_run` also prints each step's estimated FLOPs from its config (see `estimate`).

This module also holds what experiments/paper_b.py shares: Step, the runner and the collector.
"""

import argparse
import dataclasses
import functools
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (HERE, REPO):
  if _p not in sys.path:
    sys.path.insert(0, _p)

import paper_numbers  # noqa: E402  (experiments/paper_numbers.py)

from kdjax import configlib, stats  # noqa: E402
from kdjax.distill import teacher_views  # noqa: E402

FINISHED_FILE = "cost.json"  # the trainer writes it last, once the final evaluation is written
GENERATED_FILE = "dataset_info.json"  # kdjax.generate writes it last, once every shard is done
METRIC = "top-1 accuracy (%): test split; validation where the task has no test split"


# ------------------------------------------------------------------------------ steps and running
@dataclasses.dataclass(frozen=True)
class Step:
  """One kdjax command: `python -m MODULE --config=CONFIG --workdir=WORKDIR OVERRIDES...`
  (MODULE: kdjax.main, or kdjax.generate for a synthetic set)."""
  name: str
  workdir: str
  config: str  # FILE:ARG; "{beta}" in it: the strength chosen on validation (`choose`)
  overrides: tuple = ()  # --config.KEY=VALUE
  cell: tuple = ()  # (teacher, student, data, arm): the table row it feeds (None: not applicable)
  seed: int | None = None
  needs: tuple = ()  # workdirs whose runs must have finished first (adapted teachers, ...)
  teachers: tuple = ()  # Hub ids of the teachers its config.teacher.models hold (cost estimate)
  module: str = "kdjax.main"
  choose: tuple = ()  # ((beta, tuning workdir), ...): "{beta}" = the best validation accuracy
  default_beta: float | None = None  # shown by --dry_run while the tuning has not finished
  images: int | None = None  # kdjax.generate: how many images it makes (cost estimate)

  def args(self) -> list:
    return [f"--config={self.config}", f"--workdir={self.workdir}", *self.overrides]

  def command(self) -> str:
    return f"python -m {self.module} " + shlex.join(self.args())

  def with_beta(self, beta: float) -> "Step":
    return dataclasses.replace(self, config=self.config.replace("{beta}", f"{beta:g}"))


def chosen_beta(step: Step):
  """(beta, {beta: validation accuracy}) of a step's tuning runs: the beta of the best final
  validation accuracy (the smallest beta on a tie); (None, ...) until all have finished."""
  accs = {}
  for beta, workdir in step.choose:
    run = read_run(workdir)
    if run["status"] != "finished" or "accuracy" not in run:
      return None, accs
    accs[beta] = run["accuracy"]
  best = max(accs.values())
  return min(b for b, a in accs.items() if a == best), accs


def config_path(name: str) -> str:
  """configs/NAME as a path from the current directory (the commands run from it)."""
  return os.path.relpath(os.path.join(REPO, "configs", name))


def config_module(name: str):
  return configlib.load_file(os.path.join(REPO, "configs", f"{name}.py"), f"_kdjax_config_{name}")


def check_root(root: str) -> None:
  if "," in root:  # teacher paths travel inside comma-separated config arguments
    raise ValueError(f"--root must not contain a comma: {root!r}")


def set_overrides(items) -> tuple:
  out = []
  for item in items or ():
    key, eq, value = item.partition("=")
    if not eq or not key:
      raise ValueError(f"--set wants KEY=VALUE (a config key such as data.data_dir), got {item!r}")
    out.append(f"--config.{key.removeprefix('config.')}={value}")
  return tuple(out)


def seed_override(seed: int) -> str:
  return f"--config.seed={seed}"


def load_config(args):
  """The locked config kdjax.main would train with for these arguments (--config=FILE:ARG,
  --workdir, --config.KEY=VALUE ...), parsed by ml_collections' config flag exactly as main.py
  declares it: a mistyped override or config argument raises here. Cached per argument list
  (and relative to the current directory): do not modify the config it returns."""
  return _load_config(tuple(args), os.getcwd())


@functools.cache
def _load_config(args, cwd):
  del cwd  # part of the cache key only: FILE is relative to it
  from absl import flags
  from ml_collections import config_flags
  argv = ["kdjax.main", *args]
  fv = flags.FlagValues()
  # main.py's declaration; sys_argv: the config flag finds its --config.KEY overrides there
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  flags.DEFINE_bool("distributed", False, "", flag_values=fv)
  fv(argv)
  return fv["config"].value


def is_finished(workdir: str) -> bool:
  """A kdjax.main run that wrote cost.json, or a kdjax.generate set that wrote its
  dataset_info.json."""
  return any(os.path.isfile(os.path.join(workdir, f)) for f in (FINISHED_FILE, GENERATED_FILE))


def _subprocess_runner(step: Step, log_path: str) -> int:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  with open(log_path, "a") as log:
    log.write(f"\n$ {step.command()}\n")
    log.flush()
    return subprocess.run([sys.executable, "-m", step.module, *step.args()], stdout=log,
                          stderr=subprocess.STDOUT, env=env).returncode


def execute(steps, root: str, *, dry_run=False, keep_going=False, tflops=50.0, runner=None,
            out=None) -> list:
  """Runs the steps in order (skipping finished ones); returns the names of those that failed
  or could not start. `dry_run`: prints every command (finished ones commented out) with its
  estimated cost, runs nothing."""
  out = out or sys.stdout
  runner = runner or _subprocess_runner
  failed, total_flops, n = [], 0.0, len(steps)
  caches = set()  # teacher caches an earlier step makes (shared through teacher.cache_dir)
  for i, step in enumerate(steps, 1):
    done = is_finished(step.workdir)
    beta_note = ""
    if step.choose:
      beta, accs = chosen_beta(step)
      if beta is None:
        if not dry_run and not done:
          print(f"[{i}/{n}] {step.name}: not started, its beta tuning has not finished",
                file=out, flush=True)
          failed.append(step.name)
          if not keep_going:
            break
          continue
        beta = step.default_beta
        beta_note = (f"; beta: the best on validation of {[b for b, _ in step.choose]} once "
                     f"tuned ({beta:g} shown)")
      else:
        beta_note = f"; beta {beta:g}: the best validation accuracy of {accs}"
      step = step.with_beta(beta)
    if dry_run:
      if step.module == "kdjax.main":
        config = load_config(step.args())
        est = estimate(step, config, cache_made=config.teacher.cache_dir in caches)
        caches.add(config.teacher.cache_dir or None)
        note = "unknown cost" if est is None else (
            f"est. {est['flops']:.2e} FLOPs, {est['steps']} steps, "
            f"{est['flops'] / (tflops * 1e12) / 3600:.2f} GPU-h at {tflops:g} TFLOP/s")
      else:
        flops = generation_flops(step.images) if step.images else None
        est = {"flops": flops} if flops else None
        note = "unknown cost" if est is None else (
            f"est. {flops:.2e} FLOPs, {step.images} images of Stable Diffusion at 512 px, 50 "
            f"steps + guidance, {flops / (tflops * 1e12) / 3600:.2f} GPU-h at {tflops:g} "
            "TFLOP/s")
      total_flops += est["flops"] if est and not done else 0.0
      print(f"# [{i}/{n}] {step.name}: {note}{beta_note}{' (finished: skipped)' if done else ''}",
            file=out)
      print(("# " if done else "") + step.command(), file=out)
      continue
    if done:
      print(f"[{i}/{n}] {step.name}: finished, skipped", file=out, flush=True)
      continue
    missing = [w for w in step.needs if not is_finished(w)]
    if missing:
      print(f"[{i}/{n}] {step.name}: not started, {missing} not finished", file=out, flush=True)
      failed.append(step.name)
      if not keep_going:
        break
      continue
    log_path = os.path.join(root, "logs", f"{step.name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print(f"[{i}/{n}] {step.name}: running (log {log_path})\n  {step.command()}", file=out,
          flush=True)
    t = time.time()
    rc = runner(step, log_path)
    print(f"[{i}/{n}] {step.name}: {'done' if rc == 0 else f'FAILED (exit {rc})'} after "
          f"{time.time() - t:.0f} s", file=out, flush=True)
    if rc != 0:
      failed.append(step.name)
      if not keep_going:
        break
  if dry_run:
    print(f"# estimated total of the steps not finished: {total_flops:.3e} FLOPs, "
          f"{total_flops / (tflops * 1e12) / 3600:.1f} GPU-h at {tflops:g} TFLOP/s sustained "
          "(an estimate from the configs: experiments/paper_a.py `estimate`)", file=out)
  return failed


# ------------------------------------------------------------------------------ cost estimate
def _vit_gflops(width, depth, mlp, patch, size=224):
  """Forward GFLOPs (2 per multiply-add) of a ViT at `size` px: per block q/k/v/out (4 d^2) and
  the MLP (2 d mlp) per token, plus attention scores and mixing (2 t^2 d), plus the patch
  embedding. Checked against XLA's count of kdjax's ports (experiments/results/teachers_cpu_b8
  .json): ViT-B/16 35.1 vs 35.68 measured, DINOv2-B/14 46.3 vs 47.07 (norms, GELU not counted)."""
  n = (size // patch) ** 2
  t = n + 1
  block = 2 * t * (4 * width * width + 2 * width * mlp) + 4 * t * t * width
  return (depth * block + 2 * n * 3 * patch * patch * width) / 1e9


# Forward GFLOPs per image at 224 px. "measured": XLA's cost analysis of kdjax's port at batch 8
# (experiments/results/teachers_cpu_b8.json, divided by 8); ResNet-18: torchvision's 1.82 GMACs
# x 2; ViTs: _vit_gflops with the checkpoint's config.json shape (not downloaded here: the shapes
# are the published ones of these model families). DINOv2-G's SwiGLU MLP (2 x 4096 in, 4096 out)
# has the multiply-adds of a plain 6144-wide MLP.
FORWARD_GFLOPS = {
    "resnet18": 3.64, "microsoft/resnet-18": 3.64,
    "mobilenet_v2": 0.63, "google/mobilenet_v2_1.0_224": 0.63,  # measured
    "resnet50": 8.03, "microsoft/resnet-50": 8.03,  # measured
    "google/vit-base-patch16-224": 35.68,  # measured
    "facebook/deit-base-patch16-224": 35.68,  # the same ViT-B/16 network
    "facebook/dinov2-base": 47.07,  # measured
}
# (width, depth, MLP width, patch) of the ViTs (their published shapes): the cost at any size
VIT_SHAPES = {
    "google/vit-base-patch16-224": (768, 12, 3072, 16),
    "facebook/deit-base-patch16-224": (768, 12, 3072, 16),
    "facebook/deit-small-patch16-224": (384, 12, 1536, 16),
    "facebook/dinov2-small": (384, 12, 1536, 14),
    "facebook/dinov2-base": (768, 12, 3072, 14),
    "facebook/dinov2-large": (1024, 24, 4096, 14),
    "facebook/dinov2-giant": (1536, 40, 6144, 14),
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K": (1024, 24, 4096, 14),
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": (1280, 32, 5120, 14),
    "laion/CLIP-ViT-g-14-laion2B-s12B-b42K": (1408, 40, 6144, 14),
    "openai/clip-vit-large-patch14": (1024, 24, 4096, 14),
}


def forward_gflops(name: str, size: int = 224):
  """Forward GFLOPs per image of a model at `size` px (None: unknown). CNNs: FORWARD_GFLOPS
  x (size / 224)^2; ViTs: the measured figure at 224, _vit_gflops otherwise."""
  if size == 224 and name in FORWARD_GFLOPS:
    return FORWARD_GFLOPS[name]
  if name in VIT_SHAPES:
    return _vit_gflops(*VIT_SHAPES[name], size=size)
  if name in FORWARD_GFLOPS:
    return FORWARD_GFLOPS[name] * (size / 224) ** 2
  return None


# Examples per TFDS split (the TFDS catalog's split sizes; MIT Indoor-67 and FGVC-Aircraft:
# kdjax/data/prepare.py's local builders, the official lists).
SPLIT_SIZES = {
    ("cifar10", "train"): 50000, ("cifar10", "test"): 10000,
    ("cifar100", "train"): 50000, ("cifar100", "test"): 10000,
    ("mit_indoor67", "train"): 5360, ("mit_indoor67", "test"): 1340,
    ("caltech_birds2011", "train"): 5994, ("caltech_birds2011", "test"): 5794,
    ("caltech101", "train"): 3060, ("caltech101", "test"): 6084,
    ("dtd", "train"): 1880, ("dtd", "test"): 1880,
    ("oxford_flowers102", "train"): 1020, ("oxford_flowers102", "test"): 6149,
    ("oxford_iiit_pet", "train"): 3680, ("oxford_iiit_pet", "test"): 3669,
    ("fgvc_aircraft", "trainval"): 6667, ("fgvc_aircraft", "test"): 3333,
    ("food101", "train"): 75750, ("food101", "validation"): 25250,
}
# Examples of a class per split, for data.exclude_classes (Caltech-101's background_google:
# 30 in TFDS's train split, 437 in its test split, 467 in all)
CLASS_SIZES = {("caltech101", "background_google", "train"): 30,
               ("caltech101", "background_google", "test"): 437}


# XLA's count for kdjax.generate's sampler on the Stable Diffusion v1 architecture at 512 px,
# 25 steps with classifier-free guidance (BENCHMARKS.md, experiments/benchmark_generate.py
# --arch=sd-v1): 41.9 TFLOP per image; the grid's 50 steps: twice that (an upper bound: the one
# VAE decode per image is counted twice).
SD_TFLOP_PER_IMAGE_25_STEPS = 41.9


def generation_flops(images: int, steps: int = 50) -> float:
  return images * SD_TFLOP_PER_IMAGE_25_STEPS * 1e12 * steps / 25


def _split_size(name, split, exclude=()):
  sizes = [SPLIT_SIZES.get((name, s.strip())) for s in split.split("+")]
  if None in sizes:
    return None
  return sum(sizes) - sum(CLASS_SIZES.get((name, c, s.strip()), 0)
                          for c in exclude for s in split.split("+"))


def estimate(step: Step, config=None, cache_made=False):
  """{"steps", "train_images", "flops"} of a step from its config, or None (unknown sizes).

  FLOPs = train steps x batch x (3 x the student's forward: forward + backward; 1 x for a
  linear probe, whose backbone has no backward) + online teachers' forwards on every batch +
  a cached teacher's one pass over the training images (unless `cache_made`: an earlier step
  made the shared teacher.cache_dir) + each evaluation's forward passes
  (student; KD teachers once per eval set). Per-image costs: FORWARD_GFLOPS. Heads, losses and
  the optimizer are left out (under 1% here). Wall time is FLOPs / sustained FLOP/s, an
  assumption: these are fp32 runs (TF32 matmuls on GPU) at batch 64-128."""
  c = config if config is not None else load_config(step.args())
  d = c.data
  n_train = _split_size(d.name, d.train_split, d.exclude_classes)
  n_test = _split_size(d.name, d.test_split, d.exclude_classes) if d.test_split else 0
  student = forward_gflops(c.model.pretrained or c.model.name)
  views = [v[0] if v else 224
           for v in teacher_views.parse_views(c.teacher.views, len(step.teachers))]
  teachers = ([forward_gflops(t, size) for t, size in zip(step.teachers, views)]
              if c.teacher.models else [])
  if n_train is None or n_test is None or student is None or None in teachers:
    return None
  n_val = round(n_train * d.val_fraction)
  n_train -= n_val
  if d.synthetic:  # a 2x set (experiments/paper_a.py), of which synthetic_fraction is used
    n_train += round(2 * n_train * (d.synthetic_fraction or 1.0))
  steps = c.total_steps or max(1, round(c.total_epochs * (n_train // c.batch_size)))
  teacher = sum(teachers)
  per_image = student * (1 if c.model.freeze_backbone else 3)
  per_image += teacher if c.teacher.mode == "online" else 0.0
  gflops = steps * c.batch_size * per_image
  if c.teacher.mode == "cached" and not cache_made:
    gflops += n_train * c.teacher.cache_views * teacher
  every = c.eval_every_steps or (
      round(c.eval_every_epochs * (n_train // c.batch_size)) if c.eval_every_epochs else None)
  n_evals = (steps // every + (steps % every > 0)) if every else 1
  gflops += n_evals * (n_val + n_test) * student
  if c.loss.kd_weight > 0 and c.teacher.evaluate:
    gflops += (n_val + n_test) * teacher
  return {"steps": steps, "train_images": steps * c.batch_size, "flops": gflops * 1e9}


# ------------------------------------------------------------------------------ results
def read_run(workdir: str) -> dict:
  """A run's status and final evaluation: `finished` (cost.json present: its final evaluation
  is the last metrics.jsonl row with an accuracy), `incomplete` (started, not finished: no
  accuracy reported) or `not run`."""
  if not os.path.isdir(workdir):
    return {"status": "not run"}
  rows = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
          pass
  last = {"step": max((r.get("step", 0) for r in rows), default=0)}
  if not is_finished(workdir):
    return {"status": "incomplete", **last}
  out = {"status": "finished", **last}
  evals = [r for r in rows if "test/accuracy" in r or "val/accuracy" in r]
  if evals:
    final = evals[-1]
    split = "test" if "test/accuracy" in final else "val"
    out.update(split=split, accuracy=final[f"{split}/accuracy"], eval_step=final["step"])
    # the references' metric: the best evaluation of the run (sfarhat/dapt and
    # amazon-science/adaptive-feature-transfer keep the maximum test accuracy over epochs)
    best = max((r for r in evals if f"{split}/accuracy" in r),
               key=lambda r: r[f"{split}/accuracy"])
    out.update(best_accuracy=best[f"{split}/accuracy"], best_step=best["step"])
    for key in ("teacher_accuracy", "agreement", "count"):
      if f"{split}/{key}" in final:
        out[key] = final[f"{split}/{key}"]
  cost_path = os.path.join(workdir, FINISHED_FILE)  # absent: a generated set (GENERATED_FILE)
  if os.path.isfile(cost_path):
    with open(cost_path) as f:
      cost = json.load(f)
    out.update({k: cost[k] for k in ("wall_time_s", "train_flops", "eval_flops", "total_flops",
                                     "teacher_cache_flops") if k in cost})
  return out


def collect(steps, lookup, paper: str, root: str) -> dict:
  """Every planned run's result, and per table cell (seeds pooled) ours next to the paper's."""
  runs, by_cell, betas = [], {}, {}
  for step in steps:
    if step.choose:  # the strength a finished run trained with, else the one chosen now
      used = _trained_beta(step)
      betas.setdefault(step.cell, set()).add(used if used is not None else chosen_beta(step)[0])
    teacher, student, data, arm = step.cell
    run = {"name": step.name, "workdir": step.workdir, "teacher": teacher, "student": student,
           "data": data, "arm": arm, "seed": step.seed, **read_run(step.workdir)}
    runs.append(run)
    by_cell.setdefault(step.cell, []).append(run)
  cells = []
  for (teacher, student, data, arm), group in by_cell.items():
    done = [r for r in group if r["status"] == "finished" and "accuracy" in r]
    mean, ci95 = stats.interval([100.0 * r["accuracy"] for r in done]) if done else (None,
                                                                                        None)
    best, best_ci95 = (stats.interval([100.0 * r["best_accuracy"] for r in done]) if done
                       else (None, None))
    walls = [r["wall_time_s"] for r in done if "wall_time_s" in r]
    paper_value, source = lookup(teacher, student, data, arm)
    if len(done) == len(group):
      status = "finished"
    elif done:
      status = f"partial ({len(done)} of {len(group)} seeds)"
    elif any(r["status"] == "incomplete" for r in group):
      status = "incomplete (step " + str(max(r.get("step", 0) for r in group)) + ")"
    else:
      status = "not run"
    cells.append({
        "teacher": teacher, "student": student, "data": data, "arm": arm,
        "beta": _one(betas.get((teacher, student, data, arm))),
        "ours": mean, "ours_ci95": ci95, "ours_best": best, "ours_best_ci95": best_ci95,
        "seeds": [r["seed"] for r in done],
        "seeds_planned": [r["seed"] for r in group], "split": done[0]["split"] if done else None,
        "status": status, "paper": paper_value, "paper_source": source,
        "wall_time_h": sum(walls) / len(walls) / 3600 if walls else None})
  return {"paper": paper, "root": root, "metric": METRIC, "cells": cells, "runs": runs,
          "claims": [c for c in paper_numbers.CLAIMS if c["paper"] == paper]}


# the config key of each strength arm's beta (configs/paper_b.py)
BETA_KEYS = {"aft": "aft_weight", "aft_no_kernel": "aft_weight",
             "feature_kd": "feature_kd_weight", "kd": "kd_weight"}


def _trained_beta(step: Step):
  """The beta a finished run trained with (its config.json), or None."""
  path = os.path.join(step.workdir, "config.json")
  if not is_finished(step.workdir) or not os.path.isfile(path):
    return None
  with open(path) as f:
    loss = json.load(f).get("loss", {})
  return loss.get(BETA_KEYS.get(step.cell[3], ""))


def _one(values):
  """The single value of a set; a sorted list if the seeds' runs disagree; None if unknown."""
  values = {v for v in (values or ()) if v is not None}
  return None if not values else values.pop() if len(values) == 1 else sorted(values)


def fmt_ours(cell, key="ours") -> str:
  if cell[key] is None:
    return cell["status"]
  text = f"{cell[key]:.2f}"
  if len(cell["seeds"]) > 1:
    text += f" ± {cell[key + '_ci95']:.2f} ({len(cell['seeds'])} seeds)"
  if cell["split"] == "val":
    text += " (val)"
  if cell["status"] != "finished":
    text += f" [{cell['status']}]"
  return text


def markdown(result, title: str, columns, notes=()) -> str:
  """`columns`: (header, cell key) of the identifying columns, e.g. (("task", "data"), ...)."""
  lines = [f"# {title}", "", f"Results under `{result['root']}`; {result['metric']}. Ours: mean "
           "over seeds ± the half-width of its 95% confidence interval (Student's t); "
           "*final*: the last evaluation of each run (our figure, and paper B's reference's); "
           "*best*: each run's best evaluation over training (paper A's reference reports it, "
           "testing every epoch as the paper A configs do; optimistic: it selects on the "
           "evaluated split). Paper: its reported number where our sources give one.", ""]
  lines += [f"- {n}" for n in notes] + ([""] if notes else [])
  header = [h for h, _ in columns] + ["ours, final", "ours, best", "paper", "paper source",
                                      "wall-clock (h, per run)"]
  lines += ["| " + " | ".join(header) + " |",
            "| " + " | ".join(["---"] * len(columns) + ["---:", "---:", "---:", "---",
                                                        "---:"]) + " |"]
  for cell in result["cells"]:
    ident = [str(cell[k]) if cell[k] is not None else "-" for _, k in columns]
    paper = f"{cell['paper']:.2f}" if cell["paper"] is not None else "not reported"
    wall = f"{cell['wall_time_h']:.2f}" if cell["wall_time_h"] is not None else ""
    lines.append("| " + " | ".join(ident + [fmt_ours(cell), fmt_ours(cell, "ours_best"), paper,
                                            cell["paper_source"], wall])
                 + " |")
  if result["claims"]:
    lines += ["", "What our sources report (claims, not table cells):", ""]
    lines += [f"- {c['value']}{c['unit']}: \"{c['quote']}\" ({c['source']})"
              for c in result["claims"]]
  return "\n".join(lines) + "\n"


def write_results(result, markdown_text: str, out: str) -> tuple:
  """Writes OUT.json and OUT.md; returns their paths."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  with open(out + ".md", "w") as f:
    f.write(markdown_text)
  return out + ".json", out + ".md"


def csv(text: str) -> list:
  return [x.strip() for x in text.split(",") if x.strip()]


def _check_all(kind, values, valid):
  bad = [v for v in values if v not in valid]
  if bad:
    raise SystemExit(f"unknown {kind} {bad}; valid: {list(valid)}")


def common_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("command", choices=["run", "collect"])
  p.add_argument("--root", required=True, help="directory of all the runs (one sub-directory each)")
  p.add_argument("--arms", default=None, help="comma-separated (default: all)")
  p.add_argument("--seeds", default="0,1,2",
                 help="comma-separated seeds (config.seed); >= 3 for a 95% interval")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="--config.KEY=VALUE for every command (repeatable)")
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--keep_going", action="store_true",
                 help="after a failure, go on with the steps that do not depend on it")
  p.add_argument("--tflops", type=float, default=50.0,
                 help="sustained TFLOP/s that --dry_run converts its FLOPs estimate with")
  p.add_argument("--out", default="", help="collect: OUT.json and OUT.md (default ROOT/results)")


def finish(args, steps, lookup, paper, title, columns, notes=(), out=None) -> int:
  """The `run` / `collect` commands over planned steps; returns the exit status."""
  failed = []
  if args.command == "run":
    failed = execute(steps, args.root, dry_run=args.dry_run, keep_going=args.keep_going,
                     tflops=args.tflops, out=out)
    if args.dry_run:
      return 0
    if failed:
      print(f"failed or not started: {failed}", file=out or sys.stdout)
  result = collect(steps, lookup, paper, args.root)
  paths = write_results(result, markdown(result, title, columns, notes),
                        args.out or os.path.join(args.root, "results"))
  n_done = sum(c["ours"] is not None for c in result["cells"])
  print(f"{n_done} of {len(result['cells'])} cells have results: {paths[0]}, {paths[1]}",
        file=out or sys.stdout)
  return 1 if failed else 0


# ------------------------------------------------------------------------------ paper A's grid
PA = config_module("paper_a")
# distill_syn1x / 2x: distill with 1x / 2x Stable Diffusion images of the data-limited tasks
ARMS = (*PA.ARMS, "distill_syn1x", "distill_syn2x")
SYNTH_ARMS = {"distill_syn1x": 0.5, "distill_syn2x": 1.0}  # fraction of the 2x set per class
SYNTH_TASKS = ("mit_indoor67", "dtd", "caltech101")  # the reference's generated_distill.py:212
# the reference's sampling: the pipeline's defaults (PNDM, 50 steps, guidance 7.5; its
# sample_stable_diff.py:121 sets none)
SYNTH_ARG = "scheduler=pndm,steps=50,guidance=7.5"


def plan(root, teachers=None, students=None, tasks=None, arms=None, seeds=(0,), extra=()):
  """Paper A's steps in run order: per task, the teachers' adaptation and (synthetic arms) the
  2x synthetic set, then per student and seed the arms. Teacher-free arms (scratch, finetune)
  run once per student, task and seed. One 2x set per task serves both synthetic arms: its
  first half of each class is the 1x set (kdjax.generate's order)."""
  check_root(root)
  teachers = list(teachers or PA.TEACHERS)
  students, tasks = list(students or PA.STUDENTS), list(tasks or PA.TASKS)
  arms = [a for a in ARMS if a in (arms or ARMS)]
  extra = tuple(extra)
  steps = []
  for task in tasks:
    task_arms = [a for a in arms if a not in SYNTH_ARMS or task in SYNTH_TASKS]
    distills = [a for a in task_arms if a.startswith("distill")]
    adapted = {}
    for teacher in (teachers if distills else ()):
      name = f"adapt_{teacher}_{task}"
      adapted[teacher] = os.path.join(root, name)
      steps.append(Step(name, adapted[teacher],
                        f"{config_path('adapt.py')}:model={PA.TEACHERS[teacher]},task={task}",
                        extra, (teacher, None, task, "teacher"), None))
    synth = None
    if any(a in SYNTH_ARMS for a in task_arms):
      synth = os.path.join(root, f"synth_{task}_2x")
      name, train_split, _, val_fraction = PA.TASKS[task]
      n_real = _split_size(name, train_split, PA.EXCLUDE.get(task, ()))
      # kdjax.generate's config has the same data section: --set data.* reaches it too
      data_extra = tuple(o for o in extra if o.startswith("--config.data."))
      steps.append(Step(f"synth_{task}_2x", synth,
                        f"{config_path('synth/paper_a.py')}:task={task},multiple=2,{SYNTH_ARG}",
                        data_extra, (None, None, task, "synthetic"), None,
                        module="kdjax.generate",
                        images=2 * round(n_real * (1 - val_fraction)) if n_real else None))
    for student in students:
      for seed in seeds:
        for arm in task_arms:
          common = (seed_override(seed),) + extra
          if arm.startswith("distill"):
            for teacher in teachers:
              name = f"{arm}_{teacher}_{student}_{task}_s{seed}"
              arg = (f"teacher={teacher},student={student},data={task},arm=distill,"
                     f"teacher_dir={adapted[teacher]}")
              needs = (adapted[teacher],)
              if arm in SYNTH_ARMS:
                arg += f",synthetic={synth},synthetic_fraction={SYNTH_ARMS[arm]:g}"
                needs += (synth,)
              steps.append(Step(name, os.path.join(root, name),
                                f"{config_path('paper_a.py')}:{arg}", common,
                                (teacher, student, task, arm), seed, needs,
                                (PA.TEACHERS[teacher],)))
          else:
            name = f"{arm}_{student}_{task}_s{seed}"
            steps.append(Step(name, os.path.join(root, name),
                              f"{config_path('paper_a.py')}:student={student},data={task},"
                              f"arm={arm}", common, (None, student, task, arm), seed))
  return steps


def main(argv=None, out=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  common_flags(p)
  p.add_argument("--teachers", default=",".join(PA.TEACHERS))
  p.add_argument("--students", default=",".join(PA.STUDENTS))
  p.add_argument("--tasks", default=",".join(PA.TASKS))
  args = p.parse_args(argv)
  teachers, students, tasks = csv(args.teachers), csv(args.students), csv(args.tasks)
  arms = csv(args.arms) if args.arms else list(ARMS)
  _check_all("teacher", teachers, PA.TEACHERS)
  _check_all("student", students, PA.STUDENTS)
  _check_all("task", tasks, PA.TASKS)
  _check_all("arm", arms, ARMS)
  steps = plan(args.root, teachers, students, tasks, arms, [int(s) for s in csv(args.seeds)],
               set_overrides(args.set))
  notes = ["arm `teacher`: the adapted teacher itself (linear probe, configs/adapt.py); "
           "`distill` uses it; `scratch` and `finetune` have no teacher.",
           "`distill_syn1x` / `distill_syn2x`: distill with 1x / 2x Stable Diffusion images per "
           "class (labelled by prompt) and DiffAugment, MIT Indoor-67, DTD and Caltech-101 only "
           "(arm `synthetic`: the generated set)."]
  return finish(args, steps, paper_numbers.paper_a, "A",
                "Paper A (Farhat & Chen, arXiv 2404.03263): ours vs reported",
                (("task", "data"), ("student", "student"), ("teacher", "teacher"),
                 ("arm", "arm")), notes, out)


if __name__ == "__main__":
  sys.exit(main())
