r"""Function matching in the offline miniature: is the K-view teacher cache an approximation of
consistent teaching a user can trust, and from which K?

  python experiments/function_matching.py --workdir=runs/fm \
      --teacher_dir=runs/miniature/teacher --out=experiments/results/function_matching

Function matching (Beyer et al., arXiv 2106.05237; configs/function_matching.py) distils with
KL at temperature 1 and no labels, the teacher run on the very view the student sees. kdjax's
cached teacher (teacher.mode=cached) runs the teacher once on K augmented views per image and
replays one of them per epoch: cheaper, but the student then sees at most K views of each image
instead of a fresh one each step. Same setting as experiments/miniature.py (real UCI digits,
configs/demo.py): its teacher (ResNet-18 w32, trained on 1,294 labelled images), a ResNet-18 w16
student on the 200 training images of the data-limited task (their labels unused), 500 steps of
50, AdamW 1e-3, an aggressive view (random-resized crop, area 0.25-1, at 16 px; no flip). Arms:
  online         the teacher on each step's fresh view (consistent teaching)
  online_mixup   the same with mixup (Dirichlet(1, 1) ratio, every example): the full recipe
  cached_K       the teacher's outputs on K fixed views per image, K in --views
Each arm runs --seeds seeds (config.seed: the student's init, its views and batch order, the
cached views drawn). Every result: test accuracy mean with its 95% interval (Student's t),
agreement with the teacher and KL(teacher || student) on the test split, and each cached arm's
paired difference to `online` on the same seeds, called "no effect" where its interval holds 0.
Resumable: finished runs are read back from WORKDIR/SEED/ARM/fm.json.
"""

import json
import os
import sys
import time

import jax
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kdjax import configlib, runtime, stats  # noqa: E402
from kdjax.train import trainer  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/fm", "Where the runs go (resumable).")
_OUT = flags.DEFINE_string("out", "experiments/results/function_matching",
                           "Where results.json and results.md go.")
_TEACHER = flags.DEFINE_string(
    "teacher_dir", "", "A finished miniature teacher run (experiments/miniature.py's "
    "WORKDIR/teacher); empty: trained into WORKDIR/teacher with configs/demo.py:arm=teacher.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0 .. N-1 of every arm.")
_VIEWS = flags.DEFINE_list("views", ["1", "2", "4", "8", "32"], "K of the cached arms.")
_STEPS = flags.DEFINE_integer("steps", 500, "Train steps of every arm (batch 50).")
_ONLINE = ("online", "online_mixup")


def arms() -> list[str]:
  return [*_ONLINE, *[f"cached_{int(k)}" for k in _VIEWS.value]]


def arm_config(arm: str, seed: int, teacher_dir: str, cache_dir: str):
  """configs/demo.py's student setting with function matching's loss and an aggressive view."""
  c = configlib.load_file(os.path.join(REPO, "configs", "demo.py")).get_config(
      f"arm=kd,teacher_dir={teacher_dir}")
  configlib.with_method(c, "function_matching")  # KL at T=1, no CE
  c.seed = seed
  c.total_steps = _STEPS.value
  c.eval_every_steps = c.checkpoint_every_steps = _STEPS.value
  c.data.augment.kind = "rrc_flip"
  c.data.augment.flip = False  # digits
  c.data.augment.scale = (0.25, 1.0)
  if arm == "online_mixup":
    c.data.augment.mixup_alpha = 1.0
  if arm.startswith("cached_"):
    c.teacher.mode = "cached"
    c.teacher.cache_views = int(arm.split("_")[1])
    c.teacher.cache_dir = os.path.join(cache_dir, arm)  # shared by the seeds
  return c


def run_one(arm: str, seed: int, run_dir: str, teacher_dir: str, cache_dir: str) -> dict:
  record_path = os.path.join(run_dir, "fm.json")
  if os.path.isfile(record_path):
    with open(record_path) as f:
      return json.load(f)
  print(f"--- {arm} seed {seed}", flush=True)
  t0 = time.perf_counter()
  m = trainer.train_and_evaluate(arm_config(arm, seed, teacher_dir, cache_dir), run_dir).metrics
  record = {"arm": arm, "seed": seed, "test_accuracy": m["test/accuracy"],
            "agreement": m.get("test/agreement"), "agreement_top5": m.get("test/agreement_top5"),
            "kl": m.get("test/kl"), "train_flops": m["cost/train_flops"],
            "teacher_cache_flops": m.get("cost/teacher_cache_flops", 0.0),
            "wall_time_s": m["cost/wall_time_s"] + m.get("cost/teacher_cache_wall_time_s", 0.0),
            "call_wall_time_s": time.perf_counter() - t0}
  record["total_train_flops"] = record["train_flops"] + record["teacher_cache_flops"]
  os.makedirs(run_dir, exist_ok=True)
  with open(record_path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(record_path + ".tmp", record_path)
  print(f"--- {arm} seed {seed}: test accuracy {record['test_accuracy']:.4f}, KL "
        f"{record['kl']:.4f} ({record['call_wall_time_s']:.0f}s)", flush=True)
  return record


def summarise(runs: list[dict]) -> dict:
  """Per arm: mean and 95% interval of test accuracy, mean fidelity and cost; for the cached
  arms the paired difference to `online` (same seeds) with its interval and verdict."""
  online = {r["seed"]: r for r in runs if r["arm"] == "online"}
  out = {}
  for arm in dict.fromkeys(r["arm"] for r in runs):
    rs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
    mean, half = stats.interval([r["test_accuracy"] for r in rs])
    kl_mean, kl_half = stats.interval([r["kl"] for r in rs])
    a = {"seeds": [r["seed"] for r in rs], "test_accuracy": [r["test_accuracy"] for r in rs],
         "mean": mean, "ci95": half, "kl_mean": kl_mean, "kl_ci95": kl_half,
         "agreement_mean": sum(r["agreement"] for r in rs) / len(rs),
         "total_train_flops": sum(r["total_train_flops"] for r in rs) / len(rs),
         "wall_time_s": sum(r["wall_time_s"] for r in rs) / len(rs)}
    if arm != "online" and online:
      diffs = [r["test_accuracy"] - online[r["seed"]]["test_accuracy"] for r in rs
               if r["seed"] in online]
      d_mean, d_half = stats.interval(diffs)
      a["minus_online"] = {"mean": d_mean, "ci95": d_half, "differences": diffs}
      a["verdict"] = stats.verdict(a["minus_online"])
      kl_diffs = [r["kl"] - online[r["seed"]]["kl"] for r in rs if r["seed"] in online]
      k_mean, k_half = stats.interval(kl_diffs)
      a["kl_minus_online"] = {"mean": k_mean, "ci95": k_half}
      a["kl_verdict"] = stats.verdict({"mean": -k_mean, "ci95": k_half})  # lower KL: better
    out[arm] = a
  return out


def verdict(summary: dict) -> str:
  """The smallest K from which the cache and every larger K show no effect against online
  teaching, in test accuracy and in KL (paired 95% intervals holding 0), or that none does."""
  cached = sorted((int(a.split("_")[1]), a) for a in summary if a.startswith("cached_"))
  trusted = None
  for k, arm in reversed(cached):
    if summary[arm].get("verdict") == "no effect" and summary[arm].get("kl_verdict") == (
        "no effect"):
      trusted = k
    else:
      break
  if not cached:
    return "no cached arm was run"
  if trusted is None:
    return (f"no K of {[k for k, _ in cached]} matches online teaching: every cached arm "
            "differs from it in test accuracy or KL beyond its 95% interval")
  worse = [k for k, _ in cached if k < trusted]
  return (f"from K = {trusted} views per image the cached teacher is indistinguishable from "
          "online teaching here (paired differences in test accuracy and KL within their 95% "
          f"intervals for K >= {trusted})" + (f"; K in {worse} is not" if worse else ""))


def _pm(mean, half, fmt=".4f"):
  return f"{mean:{fmt}}" + (f" ± {half:.4f}" if half is not None else "")


def table(summary: dict) -> str:
  lines = ["| arm | test accuracy, mean ± 95% CI | per seed | vs online (paired) | "
           "KL(teacher ‖ student), test | KL vs online (paired) | agreement | total FLOPs | "
           "wall time (s) |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for arm, a in summary.items():
    vs = kl_vs = "-"
    if "minus_online" in a:
      d, k = a["minus_online"], a["kl_minus_online"]
      vs = f"{_pm(d['mean'], d['ci95'], '+.4f')} ({a['verdict']})"
      kl_vs = f"{_pm(k['mean'], k['ci95'], '+.4f')} ({a['kl_verdict']})"
    lines.append(f"| {arm} | {_pm(a['mean'], a['ci95'])} | "
                 f"{', '.join(f'{x:.4f}' for x in a['test_accuracy'])} | {vs} | "
                 f"{_pm(a['kl_mean'], a['kl_ci95'])} | {kl_vs} | {a['agreement_mean']:.4f} | "
                 f"{a['total_train_flops']:.3g} | {a['wall_time_s']:.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  runtime.configure(True)
  workdir = os.path.abspath(_WORKDIR.value)
  # the seeds after the first reuse the compiled programs (same programs, same results)
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
  t0, load_start = time.perf_counter(), os.getloadavg()[0]
  teacher_dir = os.path.abspath(_TEACHER.value) if _TEACHER.value else os.path.join(
      workdir, "teacher")
  if not os.path.isfile(os.path.join(teacher_dir, "cost.json")):
    print(f"--- teacher into {teacher_dir}", flush=True)
    trainer.train_and_evaluate(configlib.load_file(os.path.join(
        REPO, "configs", "demo.py")).get_config("arm=teacher"), teacher_dir)
  runs = [run_one(arm, seed, os.path.join(workdir, str(seed), arm), teacher_dir,
                  os.path.join(workdir, "caches"))
          for seed in range(_SEEDS.value) for arm in arms()]
  summary = summarise(runs)
  meta = {"command": " ".join(["python", "experiments/function_matching.py", *sys.argv[1:]]),
          "total_wall_s": time.perf_counter() - t0, "load_start": load_start,
          "load_end": os.getloadavg()[0], "steps": _STEPS.value, "seeds": _SEEDS.value,
          "teacher_dir": teacher_dir}
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "arms": summary, "runs": runs}, f, indent=2)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"# Function matching: online consistent teaching vs the K-view teacher cache\n\n"
             f"```bash\n{meta['command']}\n```\n\n{__doc__.split(chr(10) + chr(10), 2)[2]}\n"
             f"The {len(runs)} runs' own end-to-end times add up to "
             f"{sum(r['call_wall_time_s'] for r in runs) / 60:.1f} min on the 2-core machine "
             "(another experiment ran beside them); this invocation: "
             f"{meta['total_wall_s'] / 60:.1f} min (finished runs are read back).\n\n"
             f"{table(summary)}\n\n"
             f"Verdict: {verdict(summary)}.\n")
  print(table(summary))
  print(f"Verdict: {verdict(summary)}.")


if __name__ == "__main__":
  app.run(main)
