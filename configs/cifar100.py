r"""One cell of the CIFAR-100 distillation benchmark (RepDistiller / mdistiller), kdjax's way.

  python -m kdjax.main --config=configs/cifar100.py:student=resnet32x4,method=ce \
      --workdir=runs/c100/teacher_resnet32x4                 # a teacher, from scratch
  python -m kdjax.main --workdir=runs/c100/dkd_resnet32x4_resnet8x4 \
      --config=configs/cifar100.py:student=resnet8x4,method=dkd,teacher=resnet32x4,teacher_dir=runs/c100/teacher_resnet32x4
  experiments/cifar100_grid.py runs the whole table (teachers, then every method x pair x seed).

The recipe is mdistiller's (megvii-research/mdistiller at a08d46f, configs/cifar100/*.yaml and
mdistiller/engine/cfg.py:33-50): 240 epochs of batch 64, SGD momentum 0.9 (not Nesterov), lr
0.05 (0.01 for MobileNetV2 students, as mdistiller's ShuffleNet/MobileNet yaml files), weight
decay 5e-4 on every parameter (torch SGD), lr x0.1 at epochs 150, 180, 210; random crop 32 with
4 px padding and flip; CIFAR-100's mean/std (mdistiller/dataset/cifar100.py:123). Evaluated on
the test split, as the published tables are (mdistiller has no validation split); `val=0.1`
holds out 10% of the training split to tune on instead.

`method` (kdjax.configlib.METHODS) with mdistiller's own settings where it has the method
(MDISTILLER below: KD CE 0.1 + KD 0.9, T 4; CRD CE 1 + 0.8 CRD, 16,384 negatives, no KD; RKD
CE 1 + 25 distance + 50 angle; DKD alpha 1, beta 8 or its per-pair beta, T 4, 20-epoch
warm-up), logit standardisation's (kd_ls: CE 0.1 + KD 9, T 2, or the per-pair temperature of
its published logs; dkd_ls: DKD's alpha and beta x 9, T 2, or the per-pair temperature, weight
and beta of its published logs), and the papers' own for the rest (srrl, ft,
btuning, aft, feature_kd: kdjax.configlib.METHODS). FT here is paper B's reference variant (an
MLP on pooled features), not RepDistiller's paraphraser on feature maps. Teachers: a kdjax run
of the same config (method=ce) given as `teacher_dir`; `teacher` names its network (for the
per-pair settings). mdistiller's published teacher checkpoints cannot be downloaded here.

  :runlocal   a few CPU steps at batch 16
"""

from kdjax import configlib, errors
from kdjax.models.students import cifar

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# mdistiller's settings of the methods it has (mdistiller/engine/cfg.py:61-64, 75-79, 136-147)
MDISTILLER = {
    "kd": {"ce_weight": 0.1, "kd_weight": 0.9, "kd_temperature": 4.0},
    "crd": {"ce_weight": 1.0, "crd_weight": 0.8, "kd_weight": 0.0, "crd_negatives": 16384,
            "crd_temperature": 0.07, "crd_momentum": 0.5, "proj_dim": 128, "proj_head": "linear"},
    "rkd": {"ce_weight": 1.0, "rkd_weight": 1.0, "rkd_distance_weight": 25.0,
            "rkd_angle_weight": 50.0},
}
# DKD's per-pair beta (mdistiller configs/cifar100/dkd/*.yaml; 8 elsewhere)
DKD_BETA = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
            ("vgg13", "vgg8"): 6.0, ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0}
# KD+LS's per-pair temperature (the file names of logit-standardization-KD's published logs,
# README.md:90, "kd,TEACHER,STUDENT,T,WEIGHT"; 2 elsewhere)
LS_TEMPERATURE = {("vgg13", "vgg8"): 3.0}
# DKD+LS's per-pair (T, weight, beta) from the same logs' names, "dkd,TEACHER,STUDENT,T,WEIGHT,
# BETA" (README.md:94; no BETA: the mdistiller yaml's). Its tools/train.py:108-118 merges BETA
# from the command line, then multiplies alpha and beta by WEIGHT: here dkd_weight = WEIGHT,
# alpha 1, dkd_beta = BETA. Elsewhere T 2, weight 9 and DKD_BETA (its README's command).
DKD_LS = {("resnet56", "resnet20"): (3.0, 18.0, 2.0), ("resnet110", "resnet32"): (2.0, 15.0, 2.0),
          ("resnet32x4", "resnet8x4"): (2.0, 9.0, 8.0), ("wrn_40_2", "wrn_16_2"): (2.0, 12.0, 2.0),
          ("wrn_40_2", "wrn_40_1"): (2.0, 12.0, 2.0), ("vgg13", "vgg8"): (2.0, 15.0, 2.0)}


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, student="resnet8x4", teacher="resnet32x4",
                            teacher_dir="", method="ce", val=0.0)
  c = configlib.base()
  c.model.name = arg.student
  c.data.name = "cifar100"
  c.data.mean, c.data.std = CIFAR100_MEAN, CIFAR100_STD
  c.data.val_fraction = arg.val
  c.data.augment.kind = "crop_flip"
  c.data.augment.pad = 4
  c.batch_size = 64
  c.total_epochs = 240.0
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01 if arg.student.startswith("mobilenet") else 0.05
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_norm_and_bias = True  # torch SGD's weight_decay reaches every parameter
  c.optimizer.schedule = "multistep"
  c.optimizer.decay_epochs = (150.0, 180.0, 210.0)
  c.optimizer.decay_factor = 0.1
  c.eval_every_epochs = 10.0
  c.checkpoint_every_steps = 5000
  configlib.with_method(c, arg.method)
  for key, value in MDISTILLER.get(arg.method, {}).items():
    c.loss[key] = value
  if arg.method != "ce" and arg.teacher not in cifar.NETWORKS:
    raise errors.UserError(
        f"teacher={arg.teacher!r}: name the teacher's network, one of {sorted(cifar.NETWORKS)} "
        "(it picks the per-pair settings); its run directory goes in teacher_dir=")
  pair = (arg.teacher, arg.student)
  if arg.method == "dkd":
    c.loss.dkd_beta = DKD_BETA.get(pair, 8.0)
  if arg.method == "dkd_ls":
    temperature, weight, beta = DKD_LS.get(pair, (2.0, 9.0, DKD_BETA.get(pair, 8.0)))
    c.loss.dkd_temperature, c.loss.dkd_weight, c.loss.dkd_beta = temperature, weight, beta
  if arg.method == "kd_ls":
    c.loss.kd_temperature = LS_TEMPERATURE.get(pair, 2.0)
  if arg.method != "ce":
    c.teacher.models = arg.teacher_dir or f"runs/cifar100/teacher_{arg.teacher}"
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c
