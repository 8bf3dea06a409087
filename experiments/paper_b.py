r"""Paper B's vision grid (Qiu et al., ICML 2024, arXiv 2406.07337: AFT), its table next to ours.

  python experiments/paper_b.py run --root=runs/paper_b --dry_run    # print the commands, run none
  python experiments/paper_b.py run --root=runs/paper_b [--teachers=dinov2_g+clip_g,dinov2_l]
      [--students=vit_s,resnet50] [--datasets=cifar10,...] [--arms=stl,aft,feature_kd,kd]
      [--seeds=0,1,2] [--betas=0.3,1,3,10,30] [--set data.data_dir=/data/tfds] [--keep_going]
  python experiments/paper_b.py collect --root=runs/paper_b   # -> ROOT/results.json, results.md

The grid (configs/paper_b.py): pre-trained models ("teachers") x downstream students x datasets
x arms. Teachers: the single models paper B names that configs/paper_b.py has (DINOv2 ViT-L/G,
CLIP ViT-L/H/g, LAION-2B) and the concatenation DINOv2-G + CLIP-g (the reference README's
example); `--teachers` takes any configs/paper_b.py keys, several joined with '+'. Students:
ViT-S, ResNet-50 (pre-trained, new head). Datasets: the reference's seven vision sets (CIFAR-10/
100, Flowers-102, Pets, FGVC-Aircraft, DTD, Food-101). Arms: `aft` (CE + beta R), `feature_kd`
(CE + beta MSE of a linear map student -> teacher features: the paper's "KD" baseline), `kd`
(Hinton KD from the teachers adapted to the task: each teacher key is first linear-probed by
configs/adapt.py, `adapt_<key>_<dataset>`, on 90% of the training split, so it never sees the
student's validation images; not one of the paper's baselines), `stl` (the student fine-tuned,
CE only; teacher-free) and, with --arms, `aft_no_kernel` (the paper's ablation).
The reference's procedure, in order, per dataset and student (README.md:52-53,78):
  1. tuning: every arm with a strength at each beta of --betas, seed 0, on 90% of the training
     split, evaluated on the 10% validation hold-out only (`tune_<arm>_<set>_<student>_<data>_
     b<beta>`; config val=1);
  2. final runs, per seed: stl, and each arm at the beta of its best validation accuracy,
     trained on the whole training split and evaluated on the test split (config val=0).
A final run starts only when its tuning has finished (`--dry_run` shows beta 10 until then).
The teachers' features are computed once per (teacher set, student, dataset, training rows)
into ROOT/teacher_cache_<set>_<student>_<dataset>_{val,full} (kd: teacher_cache_kd_...), which
the arms and seeds share (teacher.cache_dir). Running, skipping finished steps (cost.json),
resuming, logs and `collect`: as experiments/paper_a.py (shared code); `collect` reports the
chosen beta of every final cell. Reported numbers: experiments/paper_numbers.py (none in our
sources: every cell "not reported").
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
ARMS = ("stl", "aft", "aft_no_kernel", "feature_kd", "kd")  # run order in a (student, dataset)
DEFAULT_ARMS = ("stl", "aft", "feature_kd", "kd")  # aft_no_kernel: --arms (an ablation)
TEACHER_SETS = paper_numbers.B_TEACHER_SETS
STUDENTS = paper_numbers.B_STUDENTS
DATASETS = paper_numbers.B_DATASETS
BETAS = (0.3, 1.0, 3.0, 10.0, 30.0)  # the sweep: around paper B's "1 to 10" and README's 10
TUNE_SEED = 0


def _num(x: float) -> str:
  return f"{x:g}"


def transfer_step(root, cfg, data, adapted, extra, name, arm, tset, student, beta, val, seed,
                  choose=()):
  """A run of an arm with a strength: a tuning run (val) or a final run (beta "{beta}")."""
  # one teacher cache per (teachers, student, dataset, training rows): the arms and every seed
  # read the same one (the trainer refuses a cache made for another setup)
  cache = os.path.join(root, f"teacher_cache_{'kd_' if arm == 'kd' else ''}{tset}_"
                             f"{student}_{data}_{'val' if val else 'full'}")
  arg = f"teacher={tset},student={student},data={data},arm={arm},beta={beta},val={int(val)}"
  needs, overrides = (), (f"--config.teacher.cache_dir={cache}",
                          paper_a.seed_override(seed)) + tuple(extra)
  if arm == "kd":  # the adapted teachers (a list: not expressible as teacher_dir=)
    needs = tuple(adapted[k] for k in tset.split("+"))
    overrides = (f"--config.teacher.models={','.join(needs)}",) + overrides
  cell_arm = f"tune:{arm}:b{beta}" if val else arm
  return paper_a.Step(name, os.path.join(root, name), f"{cfg}:{arg}", overrides,
                      (tset, student, data, cell_arm), seed,
                      needs + tuple(w for _, w in choose),
                      tuple(PB.TEACHERS[k][0] for k in tset.split("+")),
                      choose=tuple(choose), default_beta=10.0 if choose else None)


def plan(root, teachers=None, students=None, datasets=None, arms=None, seeds=(0,), extra=(),
         betas=BETAS):
  """Paper B's steps in run order (see the module docstring)."""
  paper_a.check_root(root)
  teacher_sets = list(teachers or TEACHER_SETS)
  students, datasets = list(students or STUDENTS), list(datasets or DATASETS)
  arms = [a for a in ARMS if a in (arms or DEFAULT_ARMS)]
  strength_arms = [a for a in arms if a in PB.STRENGTH_ARMS]
  extra = tuple(extra)
  cfg = paper_a.config_path("paper_b.py")
  steps = []
  for data in datasets:
    tfds_name, train_split, test_split = PB.DATASETS[data]
    adapted = {}
    keys = dict.fromkeys(k for t in teacher_sets for k in t.split("+"))  # ordered, unique
    for key in (keys if "kd" in arms else ()):
      name = f"adapt_{key}_{data}"
      adapted[key] = os.path.join(root, name)
      overrides = [f"--config.data.val_fraction={_num(PB.VAL_FRACTION)}"]
      if train_split != "train":
        overrides.append(f"--config.data.train_split={train_split}")
      if test_split != "test":
        overrides.append(f"--config.data.test_split={test_split}")
      steps.append(paper_a.Step(
          name, adapted[key],
          f"{paper_a.config_path('adapt.py')}:model={PB.TEACHERS[key][0]},data={tfds_name}",
          tuple(overrides) + extra, (key, None, data, "teacher"), None))

    for student in students:
      tuned = {}  # (arm, tset) -> ((beta, workdir), ...)
      for arm in strength_arms:  # 1. the beta sweep, on the validation hold-out
        for tset in teacher_sets:
          runs = []
          for beta in betas:
            name = f"tune_{arm}_{tset}_{student}_{data}_b{_num(beta)}"
            steps.append(transfer_step(root, cfg, data, adapted, extra, name, arm, tset, student,
                                       _num(beta), True, TUNE_SEED))
            runs.append((float(beta), steps[-1].workdir))
          tuned[(arm, tset)] = tuple(runs)
      for seed in seeds:  # 2. the final runs: the whole training split, the best beta
        if "stl" in arms:
          name = f"stl_{student}_{data}_s{seed}"
          steps.append(paper_a.Step(name, os.path.join(root, name),
                                    f"{cfg}:student={student},data={data},arm=stl,val=0",
                                    (paper_a.seed_override(seed),) + extra,
                                    (None, student, data, "stl"), seed))
        for tset in teacher_sets:
          for arm in strength_arms:
            name = f"{arm}_{tset}_{student}_{data}_s{seed}"
            steps.append(transfer_step(root, cfg, data, adapted, extra, name, arm, tset,
                                       student, "{beta}", False, seed, tuned[(arm, tset)]))
  return steps


def main(argv=None, out=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  paper_a.common_flags(p)
  p.add_argument("--teachers", default=",".join(TEACHER_SETS),
                 help="teacher sets, comma-separated; '+' joins the keys of one set")
  p.add_argument("--students", default=",".join(STUDENTS))
  p.add_argument("--datasets", "--tasks", dest="datasets", default=",".join(DATASETS))
  p.add_argument("--betas", default=",".join(_num(b) for b in BETAS),
                 help="the strengths swept on validation for every arm with one")
  args = p.parse_args(argv)
  teacher_sets = paper_a.csv(args.teachers)
  students, datasets = paper_a.csv(args.students), paper_a.csv(args.datasets)
  arms = paper_a.csv(args.arms) if args.arms else list(DEFAULT_ARMS)
  paper_a._check_all("teacher", [k for t in teacher_sets for k in t.split("+")], PB.TEACHERS)
  paper_a._check_all("student", students, PB.STUDENTS)
  paper_a._check_all("dataset", datasets, PB.DATASETS)
  paper_a._check_all("arm", arms, ARMS)
  steps = plan(args.root, teacher_sets, students, datasets, arms,
               [int(s) for s in paper_a.csv(args.seeds)], paper_a.set_overrides(args.set),
               tuple(float(b) for b in paper_a.csv(args.betas)))
  missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in paper_numbers.B_NOT_IN_GRID.items())
  notes = [f"beta: per (arm, teachers, student, dataset) the best validation accuracy of "
           f"{args.betas} (arms `tune:<arm>:b<beta>`, seed {TUNE_SEED}, 10% of the training "
           "split held out, no test evaluation); the final runs train on the whole training "
           "split with it (column beta) and are evaluated on the test split.",
           "arm `teacher`: a teacher linear-probed on the task (configs/adapt.py) for arm `kd`; "
           "`feature_kd` is the paper's KD baseline, `kd` (Hinton KD) is ours.",
           f"In paper B but not in configs/paper_b.py, so not in this grid: {missing}."]
  return paper_a.finish(args, steps, paper_numbers.paper_b, "B",
                        "Paper B (Qiu et al., arXiv 2406.07337, AFT), vision: ours vs reported",
                        (("dataset", "data"), ("student", "student"), ("pre-trained", "teacher"),
                         ("arm", "arm"), ("beta", "beta")), notes, out)


if __name__ == "__main__":
  sys.exit(main())
