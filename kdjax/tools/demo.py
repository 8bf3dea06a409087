r"""The offline demo: the transfer miniature in small (kdjax/tools/transfer.py), end to end.

  python -m kdjax.tools.demo --workdir=runs/demo

Trains a ResNet teacher and the student's ResNet on MNIST-5k (the pre-training corpus P),
publishes both as Hugging Face checkpoints (kdjax.export), probes the teacher on the UCI
digits (the task T, 5 labelled images per digit, seed 0), then runs four students on T:
scratch, pre-trained + fine-tuned, paper A's distillation and paper B's AFT. Prints the table
and the headline differences beside the 95% intervals of the same differences in the full
miniature (experiments/results/transfer/results.json, 3 seeds), and writes
WORKDIR/results.md and results.json. A second start reads the finished runs back.

`load_config`, `DESCRIPTIONS` and `table` serve configs/demo.py, the same-task setting of
notebooks/quickstart.ipynb and experiments/miniature.py (a teacher trained on more labels of
the task).
"""

import json
import os
import sys

from absl import app, flags

from kdjax import runtime, stats
from kdjax.tools import transfer

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo's runs go.")
_ARMS = flags.DEFINE_list("arms", ["scratch", "finetune", "distill", "aft"],
                          "Student arms (kdjax/tools/transfer.py ARMS).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every run (re-draws T's labelled images).")
_N_PER_CLASS = flags.DEFINE_integer("n_per_class", 5, "T's labelled images per digit.")
_REFERENCE = flags.DEFINE_string(
    "reference", "experiments/results/transfer/results.json",
    "The full miniature's results, for its intervals (skipped when the file is absent).")
HEADLINES = [("distill", "scratch"), ("distill", "finetune"), ("aft", "finetune")]

DESCRIPTIONS = {
    "teacher": "teacher: ResNet-18 w32, all 1,294 labelled train images",
    "scratch": "student from scratch, CE",
    "distill": "paper A: CE + KD + align + unif (online teacher)",
    "aft": "paper B: CE + AFT (cached teacher, 32 views)",
    "kd": "KD only: CE + KD (online teacher)",
    "feature_kd": "feature-KD baseline (cached teacher)",
    "unlabelled": "paper A + the left-out train images, unlabelled (online teacher)",
}


def table(rows: list[dict]) -> str:
  lines = ["| arm | what | test accuracy | agreement with teacher | train FLOPs | "
           "teacher cache FLOPs | wall time (s) |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    agree = f"{r['agreement']:.4f}" if r.get("agreement") is not None else "-"
    cache = f"{r['cache_flops']:.3g}" if r.get("cache_flops") else "-"
    lines.append(f"| {r['arm']} | {r['what']} | {r['test_accuracy']:.4f} | {agree} | "
                 f"{r['train_flops']:.3g} | {cache} | {r['wall_time_s']:.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv

  runtime.configure(True)
  runtime.quiet_libraries()

  workdir = os.path.abspath(_WORKDIR.value)
  n, seed = _N_PER_CLASS.value, _SEED.value
  result = transfer.run_all(workdir, _ARMS.value, [n], [seed], log=lambda s: print(s, flush=True))
  runs = result["runs"]
  lines = [f"T = UCI digits, {n} labelled images per digit, seed {seed}; test: 1,360 images", "",
           "| arm | what | test accuracy | agreement with teacher | train FLOPs | wall time (s) |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
  for name, r in result["pretrain"].items():
    lines.append(f"| pretrain_{name} | trained on P (MNIST-5k), published: its P test accuracy | "
                 f"{r['test_accuracy']:.4f} | - | {r['total_flops']:.3g} | "
                 f"{r['wall_time_s']:.0f} |")
  for r in result["probes"] + runs:
    what = transfer.ARMS[r["stage"]][0] if r["stage"] in transfer.ARMS else "linear probe on T"
    agree = f"{r['agreement']:.4f}" if r.get("agreement") is not None else "-"
    lines.append(f"| {r['stage']} | {what} | {r['test_accuracy']:.4f} | {agree} | "
                 f"{r['total_flops']:.3g} | {r['wall_time_s']:.0f} |")
  reference = {}
  if os.path.isfile(_REFERENCE.value):
    with open(_REFERENCE.value) as f:
      reference = {(c["arm"], c["baseline"]): c.get(f"n{n}")
                   for c in json.load(f)["summary"]["claims"]}
  lines += ["", "| comparison | this run, points | full miniature (3 seeds): mean ± 95% CI | "
            "larger than the interval? |", "| --- | ---: | ---: | --- |"]
  for arm, base in HEADLINES:
    d = stats.paired(runs, arm, base, n)
    if d is None:
      continue
    ref = reference.get((arm, base))
    if ref and ref.get("ci95") is not None:
      ref_text = f"{100 * ref['mean']:+.1f} ± {100 * ref['ci95']:.1f}"
      larger = "yes" if abs(100 * d["mean"]) > 100 * ref["ci95"] else "no: within the noise"
    else:
      ref_text, larger = "-", "no reference (run experiments/transfer.py)"
    lines.append(f"| {arm} - {base} | {100 * d['mean']:+.1f} | {ref_text} | {larger} |")
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
