r"""The offline demo, end to end: a teacher, then scratch vs paper A vs paper B students.

  python -m kdjax.demo --workdir=runs/demo

Runs configs/demo.py's arms in order (teacher, scratch, distill, aft), each in its own
sub-directory of the workdir (a second start resumes or re-evaluates finished arms), then prints
a markdown table of test accuracy and cost and writes it to WORKDIR/results.md and
WORKDIR/results.json. See configs/demo.py for what the teacher knows and how.
"""

import importlib.util
import json
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo's runs go.")
_ARMS = flags.DEFINE_list("arms", ["scratch", "distill", "aft"], "Student arms to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every run.")

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "demo.py")
DESCRIPTIONS = {
    "teacher": "teacher: ResNet-18 w32, all 1,294 labelled train images",
    "scratch": "student from scratch, CE",
    "distill": "paper A: CE + KD + align + unif (online teacher)",
    "aft": "paper B: CE + AFT (cached teacher, 32 views)",
    "kd": "KD only: CE + KD (online teacher)",
    "feature_kd": "feature-KD baseline (cached teacher)",
    "unlabelled": "paper A + the left-out train images, unlabelled (online teacher)",
}


def load_config(arg: str):
  """configs/demo.py's `get_config(arg)` (the file lives outside the package)."""
  spec = importlib.util.spec_from_file_location("kdjax_demo_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


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
  from kdjax import runtime

  runtime.configure(True)
  from kdjax import train

  workdir = os.path.abspath(_WORKDIR.value)
  teacher_dir = os.path.join(workdir, "teacher")
  rows = []
  for arm in ["teacher", *_ARMS.value]:
    config = load_config(f"arm={arm},teacher_dir={teacher_dir}")
    config.seed = _SEED.value
    print(f"--- {arm}: {DESCRIPTIONS.get(arm, arm)}", flush=True)
    m = train.train_and_evaluate(config, os.path.join(workdir, arm)).metrics
    rows.append({"arm": arm, "what": DESCRIPTIONS.get(arm, arm),
                 "test_accuracy": m["test/accuracy"], "test_count": m["test/count"],
                 "teacher_test_accuracy": m.get("test/teacher_accuracy"),
                 "agreement": m.get("test/agreement"), "train_flops": m["cost/train_flops"],
                 "cache_flops": m.get("cost/teacher_cache_flops"),
                 "wall_time_s": m["cost/wall_time_s"]
                 + m.get("cost/teacher_cache_wall_time_s", 0.0)})
    print(f"--- {arm}: test accuracy {m['test/accuracy']:.4f}", flush=True)
  text = table(rows)
  print(text)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
