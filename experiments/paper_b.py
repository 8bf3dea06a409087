r"""Paper B's vision grid (Qiu et al., ICML 2024, arXiv 2406.07337: AFT), its table next to ours.

  python experiments/paper_b.py run --root=runs/paper_b --dry_run    # print the commands, run none
  python experiments/paper_b.py run --root=runs/paper_b [--teachers=dinov2_g+clip_g,dinov2_l]
      [--students=vit_s,resnet50] [--datasets=cifar10,...] [--arms=aft,feature_kd,kd,stl]
      [--seeds=0] [--beta=10] [--kd_beta=1] [--set data.data_dir=/data/tfds] [--keep_going]
  python experiments/paper_b.py collect --root=runs/paper_b   # -> ROOT/results.json, results.md

The grid (configs/paper_b.py): pre-trained models ("teachers") x downstream students x datasets
x arms. Teachers: the single models PAPERS.md names that configs/paper_b.py has (DINOv2 ViT-L/G,
CLIP ViT-L/H/G, LAION-2B) and the concatenation DINOv2-G + CLIP-G; `--teachers` takes any
configs/paper_b.py keys, several joined with '+'. Students: ViT-S, ResNet-50 (pre-trained, new
head). Datasets: CIFAR-10/100, Flowers-102, Pets, Food-101. Arms: `aft` (CE + beta R),
`feature_kd` (CE + beta MSE of a linear map student -> teacher features: the paper's "KD"
baseline), `kd` (Hinton KD from the teachers adapted to the task: each teacher key is first
linear-probed by configs/adapt.py, `adapt_<key>_<dataset>`, on the same 90% of the training
split, so it never sees the student's validation images; not one of the paper's baselines) and
`stl` (the student fine-tuned, CE only; teacher-free: one run per student, dataset and seed).
beta: 10 for aft and feature_kd (configs/paper_b.py's default: the reference README's AFT
example), 1 for kd (the configs/paper_b.py example); our sources give no per-dataset value.
Per dataset, in order: the adaptations (if kd is planned), then per student and seed: stl,
then per teacher set aft, feature_kd, kd. The teachers' features are computed once per (teacher
set, student, dataset) into ROOT/teacher_cache_<set>_<student>_<dataset> (kd: teacher_cache_kd_
...), which aft, feature_kd and every seed share (teacher.cache_dir); the cache depends on the
student through its input normalisation, so each student has its own. Running, skipping
finished steps (cost.json), resuming, logs and `collect`: as experiments/paper_a.py (shared code).
Reported numbers: experiments/paper_numbers.py (none in our sources: every cell "not reported").
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
  sys.path.insert(0, HERE)

import paper_a  # noqa: E402  (experiments/paper_a.py: Step, runner, collector)
import paper_numbers  # noqa: E402

PB = paper_a.config_module("paper_b")
ARMS = ("stl", "aft", "feature_kd", "kd")  # run order within a (student, dataset, seed)
TEACHER_SETS = paper_numbers.B_TEACHER_SETS
STUDENTS = paper_numbers.B_STUDENTS
DATASETS = paper_numbers.B_DATASETS
VAL_FRACTION = 0.1  # configs/paper_b.py's hold-out: the adapted teachers keep the same one


def _num(x: float) -> str:
  return f"{x:g}"


def plan(root, teachers=None, students=None, datasets=None, arms=None, seeds=(0,), extra=(),
         beta=10.0, kd_beta=1.0):
  """Paper B's steps in run order (see the module docstring)."""
  paper_a.check_root(root)
  teacher_sets = list(teachers or TEACHER_SETS)
  students, datasets = list(students or STUDENTS), list(datasets or DATASETS)
  arms = [a for a in ARMS if a in (arms or ARMS)]
  extra = tuple(extra)
  betas = {"aft": beta, "feature_kd": beta, "kd": kd_beta}
  cfg = paper_a.config_path("paper_b.py")
  steps = []
  for data in datasets:
    tfds_name, train_split, test_split = PB.DATASETS[data]
    adapted = {}
    keys = dict.fromkeys(k for t in teacher_sets for k in t.split("+"))  # ordered, unique
    for key in (keys if "kd" in arms else ()):
      name = f"adapt_{key}_{data}"
      adapted[key] = os.path.join(root, name)
      overrides = [f"--config.data.val_fraction={_num(VAL_FRACTION)}"]
      if train_split != "train":
        overrides.append(f"--config.data.train_split={train_split}")
      if test_split != "test":
        overrides.append(f"--config.data.test_split={test_split}")
      steps.append(paper_a.Step(
          name, adapted[key],
          f"{paper_a.config_path('adapt.py')}:model={PB.TEACHERS[key]},data={tfds_name}",
          tuple(overrides) + extra, (key, None, data, "teacher"), None))
    for student in students:
      for seed in seeds:
        common = (paper_a.seed_override(seed),) + extra
        if "stl" in arms:
          name = f"stl_{student}_{data}_s{seed}"
          steps.append(paper_a.Step(name, os.path.join(root, name),
                                    f"{cfg}:student={student},data={data},arm=stl", common,
                                    (None, student, data, "stl"), seed))
        for tset in teacher_sets:
          hub_ids = tuple(PB.TEACHERS[k] for k in tset.split("+"))
          for arm in (a for a in arms if a != "stl"):
            name = f"{arm}_{tset}_{student}_{data}_s{seed}"
            arg = f"teacher={tset},student={student},data={data},arm={arm},beta={_num(betas[arm])}"
            # one teacher cache per (teachers, student, dataset): aft, feature_kd and every
            # seed read the same one (train.py refuses a cache made for another setup)
            cache = os.path.join(root, f"teacher_cache_{'kd_' if arm == 'kd' else ''}"
                                       f"{tset}_{student}_{data}")
            needs, overrides = (), (f"--config.teacher.cache_dir={cache}",) + common
            if arm == "kd":  # the adapted teachers (a list: not expressible as teacher_dir=)
              needs = tuple(adapted[k] for k in tset.split("+"))
              overrides = (f"--config.teacher.models={','.join(needs)}",) + overrides
            steps.append(paper_a.Step(name, os.path.join(root, name), f"{cfg}:{arg}", overrides,
                                      (tset, student, data, arm), seed, needs, hub_ids))
  return steps


def main(argv=None, out=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  paper_a.common_flags(p)
  p.add_argument("--teachers", default=",".join(TEACHER_SETS),
                 help="teacher sets, comma-separated; '+' joins the keys of one set")
  p.add_argument("--students", default=",".join(STUDENTS))
  p.add_argument("--datasets", "--tasks", dest="datasets", default=",".join(DATASETS))
  p.add_argument("--beta", type=float, default=10.0, help="aft and feature_kd strength")
  p.add_argument("--kd_beta", type=float, default=1.0, help="kd strength")
  args = p.parse_args(argv)
  teacher_sets = paper_a.csv(args.teachers)
  students, datasets = paper_a.csv(args.students), paper_a.csv(args.datasets)
  arms = paper_a.csv(args.arms) if args.arms else list(ARMS)
  paper_a._check_all("teacher", [k for t in teacher_sets for k in t.split("+")], PB.TEACHERS)
  paper_a._check_all("student", students, PB.STUDENTS)
  paper_a._check_all("dataset", datasets, PB.DATASETS)
  paper_a._check_all("arm", arms, ARMS)
  steps = plan(args.root, teacher_sets, students, datasets, arms,
               [int(s) for s in paper_a.csv(args.seeds)], paper_a.set_overrides(args.set),
               args.beta, args.kd_beta)
  missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in paper_numbers.B_NOT_IN_GRID.items())
  notes = [f"beta {_num(args.beta)} (aft, feature_kd), {_num(args.kd_beta)} (kd); students "
           f"train on 90% of the training split (10% validation hold-out, configs/paper_b.py).",
           "arm `teacher`: a teacher linear-probed on the task (configs/adapt.py) for arm `kd`; "
           "`feature_kd` is the paper's KD baseline, `kd` (Hinton KD) is ours.",
           f"In PAPERS.md but not in configs/paper_b.py, so not in this grid: {missing}."]
  return paper_a.finish(args, steps, paper_numbers.paper_b, "B",
                        "Paper B (Qiu et al., arXiv 2406.07337, AFT), vision: ours vs reported",
                        (("dataset", "data"), ("student", "student"), ("pre-trained", "teacher"),
                         ("arm", "arm")), notes, out)


if __name__ == "__main__":
  sys.exit(main())
