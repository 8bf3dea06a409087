r"""The CIFAR-100 distillation benchmark (RepDistiller / mdistiller's table), run by kdjax, with the
published numbers beside each cell.

  python experiments/cifar100_grid.py run --root=runs/cifar100 --dry_run   # the commands, no run
  python experiments/cifar100_grid.py run --root=runs/cifar100 [--pairs=resnet32x4:resnet8x4,...]
      [--arms=ce,kd,crd,dkd,kd_ls,dkd_ls,rkd,ft,srrl] [--seeds=0,1,2]
      [--set data.data_dir=/data/tfds] [--keep_going]
  python experiments/cifar100_grid.py collect --root=runs/cifar100   # -> ROOT/results.{json,md}

Pairs (teacher -> student): the six that RepDistiller's, mdistiller's and
logit-standardization-KD's READMEs all report: resnet56 -> resnet20, resnet110 -> resnet32,
resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2, wrn_40_2 -> wrn_40_1, vgg13 -> vgg8
(kdjax/models/students/cifar.py). Steps, in order: each teacher from scratch (`teacher_<net>`,
configs/cifar100.py:method=ce, seed 0: mdistiller's published teacher checkpoints cannot be
downloaded here), then per pair and seed every arm (`<arm>_<teacher>_<student>_s<seed>`; arm
`ce`: the student from scratch, once per student and seed). Each arm is a configs/cifar100.py
method with mdistiller's recipe (240 epochs, batch 64, SGD 0.05, steps at 150/180/210). The
table reports the final test accuracy, mean over seeds with its 95% interval, beside the
published number (experiments/paper_numbers.py: RepDistiller for the baselines, teachers, RKD,
FT and CRD; mdistiller for KD and DKD; logit-standardization-KD for KD+LS and DKD+LS; "-" where
none of them reports the cell). Running, skipping finished steps, resuming, logs and `collect`:
experiments/paper_a.py's shared code. Needs CIFAR-100 prepared (docs/data.md) and a GPU: every
run is 187,440 steps of batch 64 (240 epochs); the dry run's FLOP estimate for the 167 steps
(3 seeds) is 2.4e18 FLOPs, 13 GPU-h at 50 TFLOP/s sustained (small CNNs at batch 64 sustain
far less: budget several times that). No cell has been run yet: the results table holds none
of our numbers until it is.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
  sys.path.insert(0, HERE)

import paper_a  # noqa: E402  (experiments/paper_a.py: Step, runner, collector)
import paper_numbers  # noqa: E402

PAIRS = paper_numbers.C100_PAIRS
ARMS = ("ce", "kd", "crd", "dkd", "kd_ls", "dkd_ls", "rkd", "ft", "srrl")
# forward GFLOPs per 32 px image (XLA's count of the Flax networks; the cost estimate of
# --dry_run reads them as experiments/paper_a.py's FORWARD_GFLOPS)
paper_a.FORWARD_GFLOPS.update({
    "resnet56": 0.2308, "resnet20": 0.0753, "resnet110": 0.4639, "resnet32": 0.1271,
    "resnet32x4": 1.9735, "resnet8x4": 0.3281, "wrn_40_2": 0.5981, "wrn_16_2": 0.1858,
    "wrn_40_1": 0.153, "vgg13": 0.46, "vgg8": 0.1493})


def plan(root, pairs=PAIRS, arms=ARMS, seeds=(0, 1, 2), extra=()):
  """The grid's steps in run order: the teachers (seed 0), then per seed, pair and arm."""
  paper_a.check_root(root)
  cfg = paper_a.config_path("cifar100.py")
  extra = tuple(extra)
  steps, teachers = [], {}
  for teacher in dict.fromkeys(t for t, _ in pairs):
    name = f"teacher_{teacher}"
    teachers[teacher] = os.path.join(root, name)
    steps.append(paper_a.Step(name, teachers[teacher], f"{cfg}:student={teacher},method=ce",
                              (paper_a.seed_override(0),) + extra, (teacher, None, "cifar100",
                                                                    "ce"), 0))
  scratch = set()
  for seed in seeds:
    for teacher, student in pairs:
      for arm in arms:
        common = (paper_a.seed_override(seed),) + extra
        if arm == "ce":
          if (student, seed) in scratch:
            continue
          scratch.add((student, seed))
          name = f"ce_{student}_s{seed}"
          steps.append(paper_a.Step(name, os.path.join(root, name),
                                    f"{cfg}:student={student},method=ce", common,
                                    (None, student, "cifar100", "ce"), seed))
          continue
        name = f"{arm}_{teacher}_{student}_s{seed}"
        steps.append(paper_a.Step(
            name, os.path.join(root, name),
            f"{cfg}:student={student},teacher={teacher},teacher_dir={teachers[teacher]},"
            f"method={arm}", common, (teacher, student, "cifar100", arm), seed,
            (teachers[teacher],), (teacher,)))
  return steps


def lookup(teacher, student, data, arm):
  return paper_numbers.cifar100(teacher, student, data, arm)


def main(argv=None, out=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  paper_a.common_flags(p)
  p.add_argument("--pairs", default=",".join(f"{t}:{s}" for t, s in PAIRS),
                 help="teacher:student pairs, comma-separated")
  args = p.parse_args(argv)
  pairs = [tuple(x.split(":")) for x in paper_a.csv(args.pairs)]
  paper_a._check_all("pair", pairs, PAIRS)
  arms = paper_a.csv(args.arms) if args.arms else list(ARMS)
  paper_a._check_all("arm", arms, ARMS)
  steps = plan(args.root, pairs, arms, [int(s) for s in paper_a.csv(args.seeds)],
               paper_a.set_overrides(args.set))
  notes = ["arm `ce` with a teacher and no student: the teacher trained from scratch; with a "
           "student: the student from scratch (the baseline row of the published tables).",
           "`ft` is paper B's factor-transfer variant (an MLP on pooled features); the "
           "published FT is RepDistiller's paraphraser/translator on feature maps.",
           "`srrl` has no published CIFAR-100 row in these READMEs."]
  return paper_a.finish(args, steps, lookup, "cifar100",
                        "CIFAR-100 distillation benchmark: ours vs the published READMEs",
                        (("teacher", "teacher"), ("student", "student"), ("method", "arm")),
                        notes, out)


if __name__ == "__main__":
  sys.exit(main())
