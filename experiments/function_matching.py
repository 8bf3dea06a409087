r"""Function matching in the offline miniature: is the K-view teacher cache an approximation of
consistent teaching a user can trust, and from which K?

  python experiments/function_matching.py --workdir=runs/fm \
      --teacher_dir=runs/miniature/teacher --out=experiments/results/function_matching

Function matching (Beyer et al., arXiv 2106.05237; configs/function_matching.py) distils with
KL at temperature 1 and no labels, the teacher run on the very view the student sees. kdjax's
cached teacher (teacher.mode=cached) runs the teacher once on K augmented views per image and
replays one of them per epoch: cheaper, but the student then sees at most K views of each image
instead of a fresh one each step. Same setting as experiments/miniature.py (real UCI digits,
configs/demo.py): its teacher (ResNet-18 w32, trained on 1,294 labelled images, 300 steps of
64; `--teacher_dir` reuses the miniature's, else it is trained into WORKDIR/teacher the same
way), a ResNet-18 w16 student on the 200 training images of the data-limited task (their labels
unused), `--steps` steps of 50 (400 by default, so that the whole experiment, teacher
included, fits in 15 min on 2 CPU cores), AdamW 1e-3, an aggressive view (random-resized
crop, area 0.25-1, at 16 px; no flip). Arms, everything else equal (tests/unit/
test_function_matching.py checks it):
  online         the teacher on each step's fresh view (consistent teaching)
  online_mixup   the same with mixup (data.augment.mixup_alpha=1: a Beta(1, 1) ratio per batch,
                 max(a, 1 - a), every example mixed with the batch rolled by one)
  cached_K       the teacher's outputs on K fixed views per image, K in --views
Each arm runs --seeds seeds (config.seed: the student's init, its views and batch order, the
cached views drawn). Every result: test accuracy mean with its 95% interval (Student's t,
kdjax.stats), top-1 / top-5 agreement with the teacher and KL(teacher || student) on the test
split, and each arm's paired difference to `online` on the same seeds, called "no effect" where
its 95% interval holds 0. Cost: XLA's FLOPs of the train steps plus, for the cached arms, the
cache (made once per K, shared by the seeds, counted in each run). Resumable: finished runs are
read back from WORKDIR/SEED/ARM/fm.json (refused if made with another config).
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
from kdjax.train import workdir as run_dirs  # noqa: E402

FLAGS = flags.FLAGS
ONLINE = ("online", "online_mixup")


def _define_flags() -> None:
  """The command line (defined when run as a script, so importing the module defines none)."""
  flags.DEFINE_string("workdir", "runs/fm", "Where the runs go (resumable).")
  flags.DEFINE_string("out", "experiments/results/function_matching",
                      "Where results.json and results.md go.")
  flags.DEFINE_string(
      "teacher_dir", "", "A finished miniature teacher run (experiments/miniature.py's "
      "WORKDIR/teacher); empty: trained into WORKDIR/teacher with configs/demo.py:arm=teacher.")
  flags.DEFINE_integer("teacher_steps", 0, "Train steps of a teacher trained here (0: "
                       "configs/demo.py's 300; fewer only for a smoke run).")
  flags.DEFINE_integer("seeds", 3, "Seeds 0 .. N-1 of every arm.")
  flags.DEFINE_list("views", ["1", "2", "4", "8", "32"], "K of the cached arms.")
  flags.DEFINE_list("arms", [], "A subset of the arms (empty: online, online_mixup and "
                    "cached_K for every K in --views).")
  flags.DEFINE_integer("steps", 400, "Train steps of every arm (batch 50).")


def arms(views, subset=()) -> list[str]:
  """online, online_mixup and cached_K for each K of `views`; only those in `subset` if any."""
  every = [*ONLINE, *[f"cached_{int(k)}" for k in views]]
  unknown = sorted(set(subset) - set(every))
  if unknown:
    raise app.UsageError(f"--arms: unknown {unknown}; valid: {every}")
  return [a for a in every if a in subset] if subset else every


def arm_config(arm: str, seed: int, teacher_dir: str, cache_dir: str, steps: int):
  """configs/demo.py's student setting with function matching's loss and an aggressive view;
  the arms differ only in mixup (online_mixup) or the cached teacher (cached_K)."""
  c = configlib.load_file(os.path.join(REPO, "configs", "demo.py")).get_config(
      f"arm=kd,teacher_dir={teacher_dir}")
  configlib.with_method(c, "function_matching")  # KL at T=1, no CE
  c.seed = seed
  c.total_steps = steps
  c.eval_every_steps = c.checkpoint_every_steps = steps
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


def teacher_config(steps: int = 0):
  """The miniature's teacher (experiments/miniature.py: configs/demo.py:arm=teacher)."""
  c = configlib.load_file(os.path.join(REPO, "configs", "demo.py")).get_config("arm=teacher")
  if steps:
    c.total_steps = steps
    c.eval_every_steps = c.checkpoint_every_steps = steps
  return c


def _same_config(run_dir: str, config) -> None:
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    return
  with open(path) as f:
    have = configlib.flatten(json.load(f))
  diff = run_dirs.differences(have, configlib.flatten(json.loads(config.to_json_best_effort())))
  if diff:
    raise app.UsageError(f"{run_dir} holds a run with another config ({diff[:3]}: other "
                         "--steps, or a moved --workdir or --teacher_dir?): delete it or choose "
                         "another --workdir")


def run_one(arm: str, seed: int, run_dir: str, teacher_dir: str, cache_dir: str,
            steps: int) -> dict:
  config = arm_config(arm, seed, teacher_dir, cache_dir, steps)
  _same_config(run_dir, config)
  record_path = os.path.join(run_dir, "fm.json")
  if os.path.isfile(record_path):
    with open(record_path) as f:
      return json.load(f)
  print(f"--- {arm} seed {seed}", flush=True)
  t0, load_before = time.perf_counter(), os.getloadavg()[0]
  m = trainer.train_and_evaluate(config, run_dir).metrics
  record = {"arm": arm, "seed": seed, "steps": steps, "test_accuracy": m["test/accuracy"],
            "agreement": m["test/agreement"], "agreement_top5": m["test/agreement_top5"],
            "kl": m["test/kl"], "train_flops": m["cost/train_flops"],
            "teacher_cache_flops": m.get("cost/teacher_cache_flops", 0.0),
            "wall_time_s": m["cost/wall_time_s"] + m.get("cost/teacher_cache_wall_time_s", 0.0),
            "call_wall_time_s": time.perf_counter() - t0,
            "load_average_1min": [load_before, os.getloadavg()[0]]}
  record["total_train_flops"] = record["train_flops"] + record["teacher_cache_flops"]
  with open(record_path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(record_path + ".tmp", record_path)
  print(f"--- {arm} seed {seed}: test accuracy {record['test_accuracy']:.4f}, KL "
        f"{record['kl']:.4f} ({record['call_wall_time_s']:.0f}s)", flush=True)
  return record


def summarise(runs: list[dict]) -> dict:
  """Per arm: mean and 95% interval of test accuracy and KL, mean agreement and cost; for the
  other arms the paired difference to `online` (same seeds) with its interval and verdict."""
  online = {r["seed"]: r for r in runs if r["arm"] == "online"}
  out = {}
  for arm in dict.fromkeys(r["arm"] for r in runs):
    rs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
    mean, half = stats.interval([r["test_accuracy"] for r in rs])
    kl_mean, kl_half = stats.interval([r["kl"] for r in rs])
    a = {"seeds": [r["seed"] for r in rs], "test_accuracy": [r["test_accuracy"] for r in rs],
         "mean": mean, "ci95": half, "kl_mean": kl_mean, "kl_ci95": kl_half,
         "agreement_mean": sum(r["agreement"] for r in rs) / len(rs),
         "agreement_top5_mean": sum(r["agreement_top5"] for r in rs) / len(rs),
         "total_train_flops": sum(r["total_train_flops"] for r in rs) / len(rs),
         "wall_time_s": sum(r["wall_time_s"] for r in rs) / len(rs)}
    paired = [r for r in rs if r["seed"] in online]
    if arm != "online" and len(paired) >= 2:
      diffs = [r["test_accuracy"] - online[r["seed"]]["test_accuracy"] for r in paired]
      d_mean, d_half = stats.interval(diffs)
      a["minus_online"] = {"mean": d_mean, "ci95": d_half, "differences": diffs}
      a["verdict"] = stats.verdict(a["minus_online"])
      k_mean, k_half = stats.interval([r["kl"] - online[r["seed"]]["kl"] for r in paired])
      a["kl_minus_online"] = {"mean": k_mean, "ci95": k_half}
      a["kl_verdict"] = stats.verdict({"mean": -k_mean, "ci95": k_half})  # lower KL: better
    out[arm] = a
  return out


NOT_WORSE = ("no effect", "better")


def verdict(summary: dict) -> str:
  """The smallest K from which the cache, and every larger K, is not worse than online
  teaching in test accuracy nor in KL (paired 95% intervals: "no effect" or "better"), or that
  none is; each cached arm's two verdicts."""
  cached = sorted((int(a.split("_")[1]), a) for a in summary if a.startswith("cached_"))
  if not cached:
    return "no cached arm was run"
  if any("verdict" not in summary[a] for _, a in cached):
    return "too few seeds paired with `online` for a verdict"
  trusted = None
  for k, arm in reversed(cached):
    if summary[arm]["verdict"] in NOT_WORSE and summary[arm]["kl_verdict"] in NOT_WORSE:
      trusted = k
    else:
      break
  each = "; ".join(f"K = {k}: accuracy {summary[a]['verdict']}, KL {summary[a]['kl_verdict']}"
                   for k, a in cached)
  if trusted is None:
    return (f"no K of {[k for k, _ in cached]} is as good as online teaching: even the largest "
            f"is worse in test accuracy or KL beyond its paired 95% interval ({each})")
  return (f"from K = {trusted} views per image the cached teacher is not worse than online "
          "teaching here, in test accuracy nor in KL (paired 95% intervals, for every K >= "
          f"{trusted}); vs online: {each}")


def _pm(mean, half, fmt=".4f"):
  return f"{mean:{fmt}}" + (f" ± {half:.4f}" if half is not None else "")


def table(summary: dict) -> str:
  lines = ["| arm | test accuracy, mean ± 95% CI | per seed | vs online (paired) | "
           "KL(teacher ‖ student), test | KL vs online (paired) | agreement top-1 / top-5 | "
           "train FLOPs incl. cache | wall time (s) |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for arm, a in summary.items():
    vs = kl_vs = "-"
    if "minus_online" in a:
      d, k = a["minus_online"], a["kl_minus_online"]
      vs = f"{_pm(d['mean'], d['ci95'], '+.4f')} ({a['verdict']})"
      kl_vs = f"{_pm(k['mean'], k['ci95'], '+.4f')} ({a['kl_verdict']})"
    lines.append(f"| {arm} | {_pm(a['mean'], a['ci95'])} | "
                 f"{', '.join(f'{x:.4f}' for x in a['test_accuracy'])} | {vs} | "
                 f"{_pm(a['kl_mean'], a['kl_ci95'])} | {kl_vs} | "
                 f"{a['agreement_mean']:.4f} / {a['agreement_top5_mean']:.4f} | "
                 f"{a['total_train_flops']:.3g} | {a['wall_time_s']:.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  runtime.configure(True)
  workdir = os.path.abspath(FLAGS.workdir)
  # the seeds after the first reuse the compiled programs (same programs, same results)
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
  t0, load_start = time.perf_counter(), os.getloadavg()[0]
  teacher_dir = os.path.abspath(FLAGS.teacher_dir) if FLAGS.teacher_dir else os.path.join(
      workdir, "teacher")
  teacher_record = os.path.join(workdir, "teacher_call.json")  # a teacher trained here: its time
  if not os.path.isfile(os.path.join(teacher_dir, "cost.json")):
    print(f"--- teacher into {teacher_dir}", flush=True)
    trainer.train_and_evaluate(teacher_config(FLAGS.teacher_steps), teacher_dir)
    os.makedirs(workdir, exist_ok=True)
    with open(teacher_record, "w") as f:
      json.dump({"teacher_dir": teacher_dir, "call_wall_time_s": time.perf_counter() - t0}, f)
  teacher_wall = 0.0
  if os.path.isfile(teacher_record):
    with open(teacher_record) as f:
      record = json.load(f)
    teacher_wall = record["call_wall_time_s"] if record["teacher_dir"] == teacher_dir else 0.0
  with open(os.path.join(teacher_dir, "metrics.jsonl")) as f:
    teacher_accuracy = [json.loads(line) for line in f if '"test/accuracy"' in line][-1][
        "test/accuracy"]
  batch_size = arm_config("online", 0, teacher_dir, "", FLAGS.steps).batch_size
  runs = [run_one(arm, seed, os.path.join(workdir, str(seed), arm), teacher_dir,
                  os.path.join(workdir, "caches"), FLAGS.steps)
          for seed in range(FLAGS.seeds) for arm in arms(FLAGS.views, FLAGS.arms)]
  summary = summarise(runs)
  meta = {"command": " ".join(["python", "experiments/function_matching.py", *sys.argv[1:]]),
          "total_wall_s": time.perf_counter() - t0, "teacher_wall_s": teacher_wall,
          "runs_wall_s": sum(r["call_wall_time_s"] for r in runs),
          "load_start": load_start, "load_end": os.getloadavg()[0], "steps": FLAGS.steps,
          "batch_size": batch_size, "seeds": FLAGS.seeds, "teacher_dir": teacher_dir,
          "teacher_test_accuracy": teacher_accuracy, "devices": jax.device_count()}
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "arms": summary, "verdict": verdict(summary), "runs": runs}, f,
              indent=2)
  teacher_note = (f"the teacher trained by this script in {teacher_wall / 60:.1f} min, " if
                  teacher_wall else "the teacher reused, ")
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"# Function matching: online consistent teaching vs the K-view teacher cache\n\n"
            f"```bash\n{meta['command']}\n```\n\n{__doc__.split(chr(10) + chr(10), 2)[2]}\n"
            f"Measured: {len(runs)} runs of {FLAGS.steps} steps x {batch_size}, {teacher_note}the "
            f"runs in {meta['runs_wall_s'] / 60:.1f} min (each run's own end-to-end time, "
            f"together {(teacher_wall + meta['runs_wall_s']) / 60:.1f} min) on "
            f"{os.cpu_count()} CPU cores shared with other work; this invocation took "
            f"{meta['total_wall_s'] / 60:.1f} min (finished runs are read back, not re-timed; "
            f"1-minute load average {load_start:.1f} at its start, {meta['load_end']:.1f} at "
            "its end). "
            "XLA's compiled programs are kept in WORKDIR/xla_cache, so runs after the first of "
            "each program skip compiling. The teacher's test accuracy: "
            f"{teacher_accuracy:.4f}.\n\n"
            f"{table(summary)}\n\n"
            f"Verdict: {verdict(summary)}.\n")
  print(table(summary))
  print(f"Verdict: {verdict(summary)}.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
