"""The two papers' reported numbers, as data, for the reproduction tables (paper_a.py, paper_b.py).

Taken only from what we have read of the two papers: the abstracts and a summary of paper A
(Farhat & Chen, arXiv 2404.03263), the abstract of paper B (Qiu et al., arXiv 2406.07337), and
their methods, hyper-parameters and datasets (no accuracy of any run); the papers' own tables
and figures were not available to us.
None of them quotes an accuracy for any cell of either grid: every value below is None, meaning
"not reported in our sources" (the papers' own tables and figures are not among them). A value may
be filled in only with the table or figure it comes from quoted next to it; never estimate one.
Each entry is None or (top-1 test accuracy in percent, "the table or figure it is read from"),
keyed by the config arguments of configs/paper_a.py and configs/paper_b.py.
"""

NOT_REPORTED = "not reported in the sources we read (the papers' abstracts and methods)"

A_TEACHERS = ("resnet50", "vit_b16")
A_STUDENTS = ("resnet18", "mobilenet_v2")
A_TASKS = ("cifar10", "cifar100", "mit_indoor67", "cub200", "caltech101", "dtd")

# ---- Paper A (Farhat & Chen, arXiv 2404.03263) -------------------------------------------------
# Source: none. The abstract and summary state only that a distilled student "can achieve or
# surpass the performance it would achieve if it was pre-trained then finetuned", that this
# "tends not to occur if the task is data-limited" (fixed with synthetic images); the method
# gives the recipe. No table or figure value for any (teacher, student, task, arm): all None.
# The adapted teachers (step 1, linear probe of a new head): (teacher, task) -> top-1 %.
A_TEACHER_PROBE = {(t, d): None for t in A_TEACHERS for d in A_TASKS}
# Student trained from scratch, CE only: (student, task) -> top-1 %. Not in our sources.
A_SCRATCH = {(s, d): None for s in A_STUDENTS for d in A_TASKS}
# Student pre-trained on ImageNet, then fine-tuned: (student, task) -> top-1 %. Not in our sources.
A_FINETUNE = {(s, d): None for s in A_STUDENTS for d in A_TASKS}
# Distilled student (CE + KD + alignment + uniformity): (teacher, student, task) -> top-1 %.
# Not in our sources.
A_DISTILL = {(t, s, d): None for t in A_TEACHERS for s in A_STUDENTS for d in A_TASKS}
# Distilled with 1x / 2x synthetic images (MIT Indoor-67, DTD, Caltech-101): not in our sources.
A_DISTILL_SYNTHETIC = {(t, s, d, a): None for t in A_TEACHERS for s in A_STUDENTS
                       for d in ("mit_indoor67", "dtd", "caltech101")
                       for a in ("distill_syn1x", "distill_syn2x")}

B_TEACHER_KEYS = ("dinov2_l", "dinov2_g", "clip_l", "clip_h", "clip_g")
# Single pre-trained models paper B names (DINOv2 ViT-L/G, CLIP ViT-L/H/G) and their
# concatenation DINOv2-G + CLIP-G (the AFT example of the reference code's README, as quoted in
# configs/paper_b.py; paper B: "several models: concatenate their features").
B_TEACHER_SETS = (*B_TEACHER_KEYS, "dinov2_g+clip_g")
B_STUDENTS = ("vit_s", "resnet50")
B_DATASETS = ("cifar10", "cifar100", "flowers102", "pets", "aircraft", "dtd", "food101")
# In paper B's list but not in configs/paper_b.py (no config key, so no run and no row):
B_NOT_IN_GRID = {
    "downstream models": ("MLP-Mixer-B",),
    "pre-trained models": ("BiT",),
}

# ---- Paper B (Qiu et al., ICML 2024, arXiv 2406.07337), vision ----------------------------------
# Source: none. The abstract says AFT "achieves significantly better downstream performance
# compared to alternatives with a similar computational cost"; the paper lists its baselines
# (fine-tuning, KD, RKD, B-Tuning) and datasets. No table or figure value for any (pre-trained
# model(s), downstream model, dataset, method): all None.
# Standard transfer learning (fine-tuned student, CE only): (student, dataset) -> top-1 %.
B_STL = {(s, d): None for s in B_STUDENTS for d in B_DATASETS}
# AFT, feature-KD (the paper's "KD" baseline) and Hinton KD on adapted teachers (ours, not a
# baseline of the paper): (teacher set, student, dataset) -> top-1 %. Not in our sources.
B_AFT = {(t, s, d): None for t in B_TEACHER_SETS for s in B_STUDENTS for d in B_DATASETS}
B_FEATURE_KD = {(t, s, d): None for t in B_TEACHER_SETS for s in B_STUDENTS for d in B_DATASETS}
B_AFT_NO_KERNEL = {(t, s, d): None for t in B_TEACHER_SETS for s in B_STUDENTS
                   for d in B_DATASETS}
B_KD = {(t, s, d): None for t in B_TEACHER_SETS for s in B_STUDENTS for d in B_DATASETS}
# The adapted teachers of arm kd (linear probe): (teacher key, dataset) -> top-1 %.
B_TEACHER_PROBE = {(t, d): None for t in B_TEACHER_KEYS for d in B_DATASETS}

# The numbers the sources do give: claims of the abstracts, not cells of a table.
CLAIMS = (
    {"paper": "A", "value": 94, "unit": "% less training time (at most)",
     "quote": "a training method for small models that is up to 94% faster than the standard "
              "pre-training paradigm without sacrificing performance",
     "source": "arXiv 2404.03263, abstract: the wall-clock of distillation vs ImageNet "
               "pre-training plus fine-tuning"},
    {"paper": "A", "value": 6, "unit": " visual recognition tasks",
     "quote": "The authors test their method on 6 visual recognition tasks",
     "source": "arXiv 2404.03263, summary"},
    {"paper": "B", "value": 50, "unit": "x smaller downstream model (more than)",
     "quote": "AFT reliably translates improvement in pre-trained models into improvement in "
              "downstream performance, even if the downstream model is over $50\\times$ smaller",
     "source": "arXiv 2406.07337, abstract"},
)


def paper_a(teacher, student, data, arm):
  """(top-1 % or None, source) for one cell of paper A's grid (teacher/student None where the
  arm has none: scratch and finetune have no teacher, arm 'teacher' no student)."""
  if arm == "synthetic":
    return None, "a generated image set, not a result"
  if arm == "teacher":
    table, key = A_TEACHER_PROBE, (teacher, data)
  elif arm in ("distill_syn1x", "distill_syn2x"):
    table, key = A_DISTILL_SYNTHETIC, (teacher, student, data, arm)
  elif arm in ("scratch", "finetune"):
    table, key = (A_SCRATCH if arm == "scratch" else A_FINETUNE), (student, data)
  elif arm == "distill":
    table, key = A_DISTILL, (teacher, student, data)
  else:
    raise KeyError(f"paper A has no arm {arm!r}")
  return _lookup(table, key)


def paper_b(teachers, student, data, arm):
  """(top-1 % or None, source) for one cell of paper B's vision grid; `teachers` is the teacher
  set ('dinov2_g+clip_g'), None for stl; arm 'teacher' is an adapted teacher (one key)."""
  if arm.startswith("tune:"):
    return None, "a tuning run (validation split)"
  if arm == "teacher":
    table, key = B_TEACHER_PROBE, (teachers, data)
  elif arm == "stl":
    table, key = B_STL, (student, data)
  elif arm in ("aft", "aft_no_kernel", "feature_kd", "kd"):
    table = {"aft": B_AFT, "aft_no_kernel": B_AFT_NO_KERNEL, "feature_kd": B_FEATURE_KD,
             "kd": B_KD}[arm]
    key = (teachers, student, data)
  else:
    raise KeyError(f"paper B has no arm {arm!r}")
  return _lookup(table, key)


def _lookup(table, key):
  """An entry is None or (top-1 %, "the table or figure it is read from")."""
  entry = table.get(key)
  if entry is None:
    return None, NOT_REPORTED
  value, source = entry
  return float(value), source


# ------------------------------------------------------------------------------ CIFAR-100 grid
# The CIFAR-100 distillation benchmark's published numbers (top-1 test accuracy, %), for
# experiments/cifar100_grid.py, copied from the READMEs of the repositories that report them:
#   RD  https://github.com/HobbitLong/RepDistiller/blob/0eb3a95/README.md ("Benchmark Results on
#       CIFAR-100", table 1: teachers, students from scratch, KD, RKD, FT (its paraphraser
#       variant), CRD; unchanged at b84f547, the newest commit read)
#   MD  https://github.com/megvii-research/mdistiller/blob/a08d46f/README.md (KD, DKD)
#   LS  https://github.com/sunshangquan/logit-standardization-KD/blob/f6e5aa5/README.md
#       (KD+LS, DKD+LS; its KD and DKD rows repeat mdistiller's, but for DKD WRN-40-2 ->
#       WRN-16-2: 76.24 there, 76.23 in MD)
# Each one number per cell as published (the READMEs give no intervals). Keyed by (teacher,
# student); the pairs are those all three tables share.
C100_PAIRS = (("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
              ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("vgg13", "vgg8"))
_RD = "RepDistiller README (HobbitLong/RepDistiller@0eb3a95)"
_MD = "mdistiller README (megvii-research/mdistiller@a08d46f)"
_LS = "logit-standardization-KD README (sunshangquan/logit-standardization-KD@f6e5aa5)"
C100_TEACHER = {"resnet56": (72.34, _RD), "resnet110": (74.31, _RD),
                "resnet32x4": (79.42, _RD), "wrn_40_2": (75.61, _RD), "vgg13": (74.64, _RD)}
C100_STUDENT = {"resnet20": (69.06, _RD), "resnet32": (71.14, _RD), "resnet8x4": (72.50, _RD),
                "wrn_16_2": (73.26, _RD), "wrn_40_1": (71.98, _RD), "vgg8": (70.36, _RD)}
_COLS = C100_PAIRS  # the order of the values below
C100_METHODS = {
    "kd": ((70.66, 73.08, 73.33, 74.92, 73.54, 72.98), _MD),
    "crd": ((71.16, 73.48, 75.51, 75.48, 74.14, 73.94), _RD),
    "rkd": ((69.61, 71.82, 71.90, 73.35, 72.22, 71.48), _RD),
    "ft": ((69.84, 72.37, 72.86, 73.25, 71.59, 70.58), _RD),
    "dkd": ((71.97, 74.11, 76.32, 76.23, 74.81, 74.68), _MD),
    "kd_ls": ((71.43, 74.17, 76.62, 76.11, 74.37, 74.36), _LS),
    "dkd_ls": ((72.32, 74.29, 77.01, 76.39, 74.89, 74.81), _LS),
}


def cifar100(teacher, student, data, arm):
  """(published accuracy or None, its source) of a CIFAR-100 grid cell; arm "ce" of a teacher
  (student None) is the teacher's own row, of a student the from-scratch baseline."""
  del data
  if arm == "ce":
    table = C100_TEACHER if student is None else C100_STUDENT
    value = table.get(teacher if student is None else student)
    return (value[0], value[1]) if value else (None, "not in the READMEs")
  if arm in C100_METHODS and (teacher, student) in _COLS:
    values, source = C100_METHODS[arm]
    return values[_COLS.index((teacher, student))], source
  return None, "not in the READMEs (RepDistiller, mdistiller, logit-standardization-KD)"
