r"""The offline miniature of both papers: every arm x seed on real digits, a table, a JSON, a plot.

  python experiments/miniature.py --workdir=runs/miniature --out=experiments/results/miniature

Paper A (Farhat & Chen, arXiv 2404.03263) and paper B (Qiu et al., arXiv 2406.07337) in
miniature on `kdjax_digits` (kdjax/data/embedded.py: the real UCI handwritten digits that ship
inside scikit-learn), with configs/demo.py's setup: no network, 2 CPU cores. The teacher
(ResNet-18 w32) is trained once (seed 0) with labels on the 1,294 train images left after the
10% validation hold-out; every student (ResNet-18 w16) gets labels for 200 of them (20 per
digit). The teacher therefore knows more in one plain sense: it learned from 6.5x more
labelled images of the task. The test split (360 images) is seen by neither.

Arms (`--arms`), each run `--seeds` times (seed s = config.seed s: the student's init, its
augmentation and batch order, the cached views drawn; the 200 images and the hold-out are the
same in every seed, data.subset_seed=0):
  scratch     CE only
  kd          CE + KD (T=4), teacher online
  distill     paper A: CE + KD + alignment + uniformity, teacher online
  aft         paper B: CE + AFT (beta 1), teacher cached (32 augmented views per image)
  feature_kd  paper B's feature-KD baseline, teacher cached (32 views)
  unlabelled  paper A's loss plus extra unlabelled inputs (data.unlabelled_rest): the 1,094
              train images the 200 leave out, without labels, teacher online
  crd, srrl   paper A's baselines, teacher online; rkd, ft, btuning: paper B's baselines,
              teacher cached
  dkd, kd_ls, dkd_ls  decoupled KD and logit standardisation, teacher online (each with its
              method's defaults, kdjax.configlib.METHODS)
Every student arm runs the same 500 steps of 50 (`--steps` changes all of them). The cached
arms share one teacher cache (WORKDIR/teacher_cache, made once; each run's cost includes it).

Each run has its own sub-directory of WORKDIR (teacher/, SEED/ARM/); a second start skips the
finished runs (their results are in RUN/miniature.json) and resumes an interrupted one from its
checkpoint. Writes OUT/results.json (every run, the per-arm aggregates), OUT/results.md (the
table) and OUT/accuracy_vs_cost.png (test accuracy against training FLOPs, log scale).
Measured for the defaults (teacher + 14 arms x 3 seeds): 27.1 min on the 2-core machine with
another experiment beside it (load average 0.7 -> 2.5; the runs and the load are recorded in
OUT/results.md and results.json). Results: OUT/results.md.
"""

import json
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ARMS = ("scratch", "kd", "distill", "aft", "feature_kd", "unlabelled", "crd", "srrl", "rkd",
        "ft", "btuning", "dkd", "kd_ls", "dkd_ls")
DESCRIPTIONS = {
    "teacher": "teacher: ResNet-18 w32, labels on all 1,294 train images (6.5x the students' "
               "200); trained once, seed 0",
    "scratch": "student from scratch, CE only",
    "kd": "CE + KD (T=4), teacher online",
    "distill": "paper A: CE + KD + align + unif, teacher online",
    "aft": "paper B: CE + AFT (beta 1), teacher cached (32 views)",
    "feature_kd": "feature-KD baseline (paper B), teacher cached (32 views)",
    "unlabelled": "paper A + extra unlabelled inputs: the 1,094 left-out train images without "
                  "labels, teacher online",
    "crd": "paper A's baseline CRD: CE + KD + CRD (4,096 negatives), teacher online",
    "srrl": "paper A's baseline SRRL: CE + SRRL + feature regression, teacher online",
    "rkd": "paper B's baseline RKD: CE + (distance + 2 angle) / 2, teacher cached (32 views)",
    "ft": "paper B's baseline FT: CE + MLP to teacher features (L1), teacher cached (32 views)",
    "btuning": "paper B's baseline B-Tuning: CE + LogME-weighted regression, teacher cached "
               "(32 views)",
    "dkd": "DKD: CE + TCKD + 8 NCKD (T=4, 20-epoch warm-up), teacher online",
    "kd_ls": "KD with logit standardisation (CE 0.1 + KD 9, T=2), teacher online",
    "dkd_ls": "DKD with logit standardisation (T=2), teacher online",
}

_WORKDIR = flags.DEFINE_string("workdir", "runs/miniature", "Where the runs go (resumable).")
_OUT = flags.DEFINE_string("out", "experiments/results/miniature",
                           "Where results.json, results.md and accuracy_vs_cost.png go.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0 .. N-1 of every student arm.")
_ARMS = flags.DEFINE_list("arms", list(ARMS), f"Student arms, of {list(ARMS)}.")
_COMPILE_CACHE = flags.DEFINE_bool(
    "compile_cache", True, "Keep XLA's compiled programs in WORKDIR/xla_cache: the seeds after "
    "the first reuse them (same programs, same results; their wall times then lack compilation).")
_STEPS = flags.DEFINE_integer("steps", 0, "Train steps of every student arm (0: the config's "
                              "500); the teacher keeps its 300.")


def _last_epoch(run_dir: str) -> float | None:
  """Passes over the training rows at the end (metrics.jsonl's last `epoch`)."""
  epoch = None
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    for line in f:
      epoch = json.loads(line).get("epoch", epoch)
  return epoch


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def run_one(arm: str, seed: int, run_dir: str, teacher_dir: str,
            cache_dir: str) -> tuple[dict, bool]:
  """Trains (or resumes, or skips when finished) one run: (its record, trained now)."""
  from kdjax import configlib
  from kdjax.train import trainer

  config = configlib.load_file(os.path.join(REPO, "configs", "demo.py")).get_config(
      f"arm={arm},teacher_dir={teacher_dir}")
  config.seed = seed
  if _STEPS.value and arm != "teacher":
    config.total_steps = _STEPS.value
    config.eval_every_steps = config.checkpoint_every_steps = max(1, _STEPS.value // 2)
  if config.teacher.mode == "cached":  # one cache for every cached arm and seed (same spec)
    config.teacher.cache_dir = cache_dir
  wanted = json.loads(config.to_json_best_effort())
  record_path = os.path.join(run_dir, "miniature.json")
  config_path = os.path.join(run_dir, "config.json")
  if os.path.isfile(config_path):
    with open(config_path) as f:
      have = _flat(json.load(f))
    want = _flat(wanted)
    differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if differ:
      raise ValueError(f"{run_dir} holds a run with another config (differs in {differ[:5]}; "
                       "other --steps, or a moved --workdir?): delete it or choose another "
                       "--workdir")
  if os.path.isfile(record_path):
    with open(record_path) as f:
      record = json.load(f)
    print(f"--- {arm} seed {seed}: finished before, test accuracy "
          f"{record['test_accuracy']:.4f}", flush=True)
    return record, False
  print(f"--- {arm} seed {seed}: {DESCRIPTIONS[arm]}", flush=True)
  load_before, t0 = os.getloadavg()[0], time.perf_counter()
  m = trainer.train_and_evaluate(config, run_dir).metrics
  record = {
      "arm": arm, "seed": seed, "what": DESCRIPTIONS[arm],
      "test_accuracy": m["test/accuracy"], "test_count": m["test/count"],
      "val_accuracy": m.get("val/accuracy"),
      "teacher_test_accuracy": m.get("test/teacher_accuracy"),
      "agreement": m.get("test/agreement"),
      "agreement_top5": m.get("test/agreement_top5"), "kl": m.get("test/kl"),
      "steps": config.total_steps, "batch_size": config.batch_size,
      "epochs": _last_epoch(run_dir),
      "train_flops": m["cost/train_flops"],
      "flops_per_train_step": m["cost/flops_per_train_step"],
      "teacher_cache_flops": m.get("cost/teacher_cache_flops", 0.0),
      "online_teacher_flops_per_train_step": m.get("cost/online_teacher_flops_per_train_step"),
      "eval_flops": m["cost/eval_flops"],
      # the trainer's own clock (train loop incl. the step's compilation and the evals) plus the
      # cache's making (shared: paid once, counted in every cached run as a run on its own would)
      "wall_time_s": m["cost/wall_time_s"] + m.get("cost/teacher_cache_wall_time_s", 0.0),
      "teacher_cache_wall_time_s": m.get("cost/teacher_cache_wall_time_s", 0.0),
      # this call end to end (data, teacher load, init, FLOP analysis, compile, train, evals);
      # a resumed run counts only its last part
      "call_wall_time_s": time.perf_counter() - t0,
      "load_average_1min": [load_before, os.getloadavg()[0]],
  }
  record["total_train_flops"] = record["train_flops"] + record["teacher_cache_flops"]
  with open(record_path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(record_path + ".tmp", record_path)
  print(f"--- {arm} seed {seed}: test accuracy {record['test_accuracy']:.4f} "
        f"({record['call_wall_time_s']:.0f}s)", flush=True)
  return record, True


def aggregate(runs: list[dict]) -> dict:
  """Per-arm mean with its 95% interval, sample standard deviation (n-1), min and max over
  seeds, and the paired difference to scratch of the same seed with its interval and verdict."""
  import numpy as np

  from kdjax import stats

  by_arm: dict[str, list] = {}
  for r in runs:
    by_arm.setdefault(r["arm"], []).append(r)
  scratch = {r["seed"]: r["test_accuracy"] for r in by_arm.get("scratch", [])}
  out = {}
  for arm, rs in by_arm.items():
    rs = sorted(rs, key=lambda r: r["seed"])
    acc = np.asarray([r["test_accuracy"] for r in rs])
    agreement = [r["agreement"] for r in rs if r.get("agreement") is not None]
    paired = [r["test_accuracy"] - scratch[r["seed"]] for r in rs if r["seed"] in scratch]
    diff = None
    if paired and arm != "scratch":
      d_mean, d_half = stats.interval(paired)
      diff = {"mean": d_mean, "ci95": d_half}
    fidelity = {k: float(np.mean([r[k] for r in rs])) if all(r.get(k) is not None for r in rs)
                else None for k in ("agreement_top5", "kl")}
    out[arm] = {
        "what": DESCRIPTIONS[arm], "seeds": [r["seed"] for r in rs],
        "test_accuracy": acc.tolist(), "mean": float(acc.mean()),
        "ci95": stats.interval(acc)[1],
        "std": float(acc.std(ddof=1)) if len(acc) > 1 else None,  # sample std (n-1)
        "min": float(acc.min()), "max": float(acc.max()),
        "agreement_mean": float(np.mean(agreement)) if agreement else None,
        "minus_scratch_mean": float(np.mean(paired)) if paired and arm != "scratch" else None,
        "minus_scratch_ci95": diff["ci95"] if diff else None,
        "verdict": stats.verdict(diff) if diff else None,
        "agreement_top5_mean": fidelity["agreement_top5"], "kl_mean": fidelity["kl"],
        "steps": rs[0]["steps"], "batch_size": rs[0]["batch_size"], "epochs": rs[0]["epochs"],
        "train_flops": float(np.mean([r["train_flops"] for r in rs])),
        "teacher_cache_flops": float(np.mean([r["teacher_cache_flops"] for r in rs])),
        "total_train_flops": float(np.mean([r["total_train_flops"] for r in rs])),
        "wall_time_s_mean": float(np.mean([r["wall_time_s"] for r in rs])),
        "call_wall_time_s_mean": float(np.mean([r["call_wall_time_s"] for r in rs])),
    }
  return out


def table(teacher: dict, arms: dict) -> str:
  lines = ["| arm | what | test accuracy, mean ± 95% CI | min - max | per seed | vs scratch "
           "(paired, 95% CI) | agreement with teacher (top-1 / top-5) | KL(teacher ‖ student) | "
           "steps x batch (epochs) | train FLOPs | teacher cache FLOPs | total FLOPs | "
           "wall time (s) |",
           "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
           "| ---: |"]
  lines.append(f"| teacher | {teacher['what']} | {teacher['test_accuracy']:.4f} | - | "
               f"{teacher['test_accuracy']:.4f} | - | - | - | {teacher['steps']} x "
               f"{teacher['batch_size']} ({teacher['epochs']:.0f}) | "
               f"{teacher['train_flops']:.3g} | - | {teacher['train_flops']:.3g} | "
               f"{teacher['wall_time_s']:.0f} |")
  for arm, a in arms.items():
    per_seed = ", ".join(f"{x:.4f}" for x in a["test_accuracy"])
    diff = "-"
    if a["minus_scratch_mean"] is not None:
      half = a.get("minus_scratch_ci95")
      diff = (f"{a['minus_scratch_mean']:+.4f}" + (f" ± {half:.4f}" if half is not None else "")
              + f" ({a['verdict']})")
    agree = f"{a['agreement_mean']:.4f}" if a["agreement_mean"] is not None else "-"
    if a.get("agreement_top5_mean") is not None:
      agree += f" / {a['agreement_top5_mean']:.4f}"
    kl = f"{a['kl_mean']:.4f}" if a.get("kl_mean") is not None else "-"
    cache = f"{a['teacher_cache_flops']:.3g}" if a["teacher_cache_flops"] else "-"
    spread = f"± {a['ci95']:.4f}" if a.get("ci95") is not None else "(1 seed)"
    lines.append(f"| {arm} | {a['what']} | {a['mean']:.4f} {spread} | "
                 f"{a['min']:.4f} - {a['max']:.4f} | {per_seed} | {diff} | {agree} | {kl} | "
                 f"{a['steps']} x {a['batch_size']} ({a['epochs']:.0f}) | "
                 f"{a['train_flops']:.3g} | {cache} | {a['total_train_flops']:.3g} | "
                 f"{a['wall_time_s_mean']:.0f} |")
  return "\n".join(lines)


def plot(teacher: dict, arms: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
  markers = "osD^vPX"
  placed: list[float] = []  # x of the points labelled so far, to stagger labels of close points
  for i, (arm, a) in enumerate(arms.items()):
    x, half = a["total_train_flops"], a.get("ci95") or 0.0
    ax.errorbar([x], [a["mean"]], yerr=[[a["mean"] - a["min"]], [a["max"] - a["mean"]]],
                fmt="none", ecolor=f"C{i}", alpha=0.3, elinewidth=7)  # min-max range
    ax.plot([x] * len(a["test_accuracy"]), a["test_accuracy"], "_", color=f"C{i}", alpha=0.8,
            markersize=12)  # every seed
    spread = f" ± {a['ci95']:.4f}" if a.get("ci95") is not None else ""
    ax.errorbar([x], [a["mean"]], yerr=[half], fmt=markers[i % len(markers)], color=f"C{i}",
                capsize=4, markersize=7, label=f"{arm}: {a['mean']:.4f}{spread}")
    close = sum(1 for px in placed if abs(px / x - 1) < 0.15)
    placed.append(x)
    ax.annotate(arm, (x, a["mean"]), xytext=(8, -14 + 11 * close), textcoords="offset points",
                fontsize=9, color=f"C{i}")
  ax.plot([teacher["train_flops"]], [teacher["test_accuracy"]], "k*", markersize=12,
          label=f"teacher (own training, paid once): {teacher['test_accuracy']:.4f}")
  ax.annotate("teacher", (teacher["train_flops"], teacher["test_accuracy"]), xytext=(8, 4),
              textcoords="offset points", fontsize=9)
  ax.set_xscale("log")
  xs = [a["total_train_flops"] for a in arms.values()] + [teacher["train_flops"]]
  ax.set_xlim(min(xs) / 1.25, max(xs) * 1.4)
  ax.margins(y=0.12)
  ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel("training FLOPs of the run (XLA count; online teacher forwards included, "
                "cached arms + the cache)", fontsize=8)
  ax.set_ylabel("test accuracy (360 real digits)")
  n = max(len(a["seeds"]) for a in arms.values())
  ax.set_title(f"kdjax miniature, digits, 200 labelled images: mean over {n} seed(s)\n"
               "marker: mean; bars: 95% CI; dashes: each seed; shaded: min-max",
               fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def markdown(teacher: dict, arms: dict, runs: list[dict], meta: dict) -> str:
  seeds = sorted({r["seed"] for r in runs})
  unlabelled = """
- `unlabelled` (paper A's extra inputs): the train images the 200 leave out (1,094, validation
  excluded) join the training rows with label -1: CE and the train accuracy skip them; KD,
  alignment and uniformity use every row. Paper A adds Stable Diffusion images the teacher never
  saw; offline these are real images that the teacher learned with labels, so its outputs on
  them are close to the true labels: this arm measures extra inputs for distillation, not
  synthetic ones. Same steps as every arm, so the 200 labelled images are ~15% of each batch
  and each is seen about 20 times instead of 125.""" if "unlabelled" in arms else ""
  compile_note = ("XLA's compiled programs were kept in WORKDIR/xla_cache, so the seeds after the "
                  "first reuse them and their wall times lack most of the compilation."
                  if meta["compile_cache"] else "Every run compiled its programs.")
  summed = (teacher["call_wall_time_s"] + sum(r["call_wall_time_s"] for r in runs)) / 60
  total = len(runs) + 1
  prose = f"""This invocation: {meta['total_wall_s'] / 60:.1f} min, {meta['trained_now']} of {total}
runs trained now (the others had finished before and were read back; the runs' own end-to-end times
add up to {summed:.1f} min); 1-minute load average
{meta['load_start']:.1f} at the start, {meta['load_end']:.1f} at the end (2 cores: other work on
the machine inflates every wall time below).

- Data: `kdjax_digits`, the real UCI handwritten digits shipped in scikit-learn (1,437 train /
  360 test, 8x8 upsampled to 16 px). A 10% validation hold-out (143) is taken from train first.
- How the teacher honestly knows more: the teacher (ResNet-18 width 32) is trained with labels on
  all 1,294 remaining train images; every student (ResNet-18 width 16) gets labels for 200 of
  them (20 per digit): the teacher learned from 6.5x more labelled images of the task. The test
  split is seen by neither. The teacher is trained once (seed 0) and shared by every run, as a
  public pre-trained teacher would be; its own training cost ({teacher['train_flops']:.3g}
  FLOPs) is paid once and drawn as a separate star in the plot.
- Seeds {seeds}: `config.seed` (the student's initialisation, its augmentation and batch order,
  the cached views drawn). The 200 images and the hold-out are the same in every seed
  (`data.subset_seed=0`), so the spread does not include the choice of images.
- Spread: "mean ± 95% CI" is the half-width of the 95% confidence interval of the mean over
  seeds (Student's t, n-1 degrees of freedom; kdjax.stats); min - max and every seed's value are
  given too. "vs scratch (paired)": mean over seeds of (arm - scratch of the same seed) with its
  95% interval; "better"/"worse" only where the interval excludes 0, else "no effect". One test
  image is 0.28 points. Fidelity (test split, mean over seeds): top-1 and top-5 agreement with
  the teacher and KL(teacher ‖ student) at temperature 1.
- Cost: train FLOPs are XLA's count of the compiled train step times the steps (an online
  teacher's forward passes are inside the step); the cached arms add the one-off teacher cache
  (32 augmented views of each of the 200 images), made once in the workdir and shared by the
  cached arms and seeds, but counted in every cached run as a run on its own would pay it.
  Wall time: the trainer's clock (training loop with the step's compilation and the evals) plus
  the cache's making, mean over seeds; end-to-end per-call times are in results.json
  (`call_wall_time_s`). {compile_note}
- Steps: every student arm runs the same steps of batch 50, so the arms cost the same per step
  up to the teacher's part; "epochs" are passes over each arm's training rows.{unlabelled}"""
  return (f"# kdjax miniature: both papers on real digits, offline, 2 CPU cores\n\n"
          f"```bash\n{meta['command']}\n```\n\n{_reflow(prose)}\n\n{table(teacher, arms)}\n\n"
          "![test accuracy against training cost](accuracy_vs_cost.png)\n")


def _reflow(text: str) -> str:
  """Paragraphs and "- " bullets re-wrapped at 100 columns."""
  import textwrap

  blocks = []
  for block in text.strip().split("\n\n"):
    items = [block] if not block.startswith("- ") else ["- " + b for b in
                                                         block[2:].split("\n- ")]
    for item in items:
      bullet = item.startswith("- ")
      blocks.append(textwrap.fill(" ".join(item.split()), 100, subsequent_indent="  " * bullet,
                                  break_on_hyphens=False, break_long_words=False))
    blocks.append("")
  return "\n".join(blocks).strip()


def main(argv):
  del argv
  unknown = sorted(set(_ARMS.value) - set(ARMS))
  if unknown:
    raise app.UsageError(f"unknown arms {unknown}; valid: {list(ARMS)}")
  if _SEEDS.value < 1 or not _ARMS.value:
    raise app.UsageError("need --seeds >= 1 and at least one arm")
  from kdjax import runtime

  runtime.configure(True)
  import jax

  if _COMPILE_CACHE.value:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.abspath(_WORKDIR.value), "xla_cache"))
  t0, load_start = time.perf_counter(), os.getloadavg()[0]
  workdir, out = os.path.abspath(_WORKDIR.value), os.path.abspath(_OUT.value)
  teacher_dir = os.path.join(workdir, "teacher")
  cache_dir = os.path.join(workdir, "teacher_cache")
  teacher, trained = run_one("teacher", 0, teacher_dir, teacher_dir, cache_dir)
  runs, trained_now = [], int(trained)
  for seed in range(_SEEDS.value):
    for arm in _ARMS.value:
      record, trained = run_one(arm, seed, os.path.join(workdir, str(seed), arm), teacher_dir,
                                cache_dir)
      runs.append(record)
      trained_now += trained
  arms = aggregate(runs)
  meta = {"command": " ".join(["python", "experiments/miniature.py", *sys.argv[1:]]),
          "total_wall_s": time.perf_counter() - t0, "trained_now": trained_now,
          "load_start": load_start, "load_end": os.getloadavg()[0], "workdir": workdir,
          "compile_cache": _COMPILE_CACHE.value, "seeds": _SEEDS.value, "arms": _ARMS.value,
          "teacher": "trained once (seed 0), shared by every run",
          "seeds_vary": "config.seed: student init, augmentation, batch order, cached views drawn; "
                        "the 200 labelled images and the validation hold-out are fixed "
                        "(data.subset_seed=0)",
          "spread": "ci95 = half-width of the 95% confidence interval of the mean (Student t, "
                    "n-1 dof); std = sample standard deviation (ddof=1); min and max"}
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "teacher": teacher, "arms": arms, "runs": runs}, f, indent=2)
  plot(teacher, arms, os.path.join(out, "accuracy_vs_cost.png"))
  text = markdown(teacher, arms, runs, meta)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  print(table(teacher, arms), flush=True)
  print(f"wrote {out}/results.md, results.json, accuracy_vs_cost.png "
        f"({meta['total_wall_s'] / 60:.1f} min)", flush=True)


if __name__ == "__main__":
  app.run(main)
