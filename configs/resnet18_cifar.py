r"""The fast default: distil an adapted ImageNet teacher into a ResNet-18 on CIFAR-10 (paper A).

Student: ResNet-18 with the CIFAR stem (3x3, no max-pool), random init, at 32 px (pad-4 crop +
flip). Teacher: microsoft/resnet-50 (`teacher=resnet50`, default) or
google/vit-base-patch16-224 (`teacher=vit_b16`), adapted to CIFAR-10 by a linear probe
(`teacher.adapt`: configs/adapt.py's recipe, kdjax.configlib.adapt_config: a new head on the
frozen backbone at 224 px, AdamW, 10 epochs; `adapt=finetune`: a full fine-tune, 30 epochs),
frozen, run online at its own resolution: every step the student's augmented batch is resized
on the device to 224 px and normalised the teacher's way, so both see the same image. Loss
(Farhat & Chen, arXiv 2404.03263): CE + KD (T=4) + alignment + uniformity, all weights 1, mlp
projection heads to 128-d. Optimiser: the CIFAR recipe of the scratch baseline (SGD + Nesterov,
lr 0.1 cosine, wd 5e-4, batch 128, 200 epochs) so `arm=scratch` is the like-for-like baseline;
paper A's own recipe (AdamW, 224 px, 250 epochs) is configs/paper_a.py.

One command (network + tensorflow-cpu for the data, see docs/data.md):
  python -m kdjax.main --config=configs/resnet18_cifar.py --workdir=runs/r18_cifar
Step 1 adapts the teacher into runs/r18_cifar/teacher (an ordinary run directory: resumed if
killed, skipped once finished), step 2 distils from it; runs/r18_cifar/adapt.json records the
teacher's source, step and accuracy. Tune the adaptation with --config.teacher.adapt.KEY=VALUE
(e.g. --config.teacher.adapt.total_epochs=5). `--overwrite` restarts the distillation; the
adapted teacher is kept unless its own config changed. Offline, a missing Hub teacher or dataset
is named with the command that fetches it, before anything is written.
A teacher adapted already (configs/adapt.py; shared by several runs) is used as it is with
`teacher_dir` (no adaptation then):
  python -m kdjax.main --config=configs/adapt.py:model=microsoft/resnet-50,data=cifar10 \
      --workdir=runs/adapt_resnet50_cifar10
  python -m kdjax.main --config=configs/resnet18_cifar.py:teacher_dir=runs/adapt_resnet50_cifar10 \
      --workdir=runs/r18_cifar
Baseline (no teacher):
  python -m kdjax.main --config=configs/resnet18_cifar.py:arm=scratch --workdir=runs/r18_scratch
Cached teacher instead of online (teacher run once over 10 augmented views per image):
  ... --config.teacher.mode=cached --config.teacher.cache_views=10
Another objective, with its paper's defaults (kdjax.configlib.METHODS: kd, kd_ls, dkd, dkd_ls,
crd, srrl, rkd, ft, btuning, aft, feature_kd, function_matching; docs/distillation.md):
  python -m kdjax.main --config=configs/resnet18_cifar.py:method=dkd --workdir=runs/r18_dkd

Expected: scratch ~95% test accuracy (the usual figure for this recipe); paper A reports
distillation matching or beating the ImageNet-pre-trained ResNet-18 fine-tuned on CIFAR-10.
Neither measured by us yet (no CIFAR-10 or Hub download on our machines). Cost: the ResNet-50
forward at 224 px (4.1 GFLOPs/image) is ~2.4x the student's training step at 32 px, so an online
run costs ~3.4x the scratch run (about 2 h on one A100-class GPU); cached with 10 views the
teacher runs 500k times once and the steps cost the same as scratch. The adaptation adds about
1 GPU-hour (10 epochs at 224 px, the frozen backbone's forward pass dominates).

`:runlocal` shrinks it to a few steps with a small batch (the adaptation too: 4 steps at
32 px), for a CPU smoke test:
  python -m kdjax.main --config=configs/resnet18_cifar.py:arm=scratch,runlocal --workdir=/tmp/r18
"""

from kdjax import configlib

# the Hub teachers, adapted to CIFAR-10 by `teacher.adapt`
TEACHERS = {"resnet50": "microsoft/resnet-50", "vit_b16": "google/vit-base-patch16-224"}


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, arm="distill", teacher="resnet50",
                            teacher_dir="", adapt="probe", method="align_uniform")
  if arg.teacher not in TEACHERS:
    raise ValueError(f"unknown teacher {arg.teacher!r}; valid: {sorted(TEACHERS)}")
  if arg.arm not in ("distill", "scratch"):
    raise ValueError(f"unknown arm {arg.arm!r}; valid: ['distill', 'scratch']")
  c = configlib.base()
  c.data.name = "cifar10"
  c.total_epochs = 200.0
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  if arg.arm == "distill":
    if arg.teacher_dir:  # adapted already: used as it is
      c.teacher.models = arg.teacher_dir
    else:  # adapted by the same command into WORKDIR/teacher first
      c.teacher.adapt = configlib.adapt_config(TEACHERS[arg.teacher], arg.adapt, c.data.name)
    configlib.with_method(c, arg.method)  # paper A: CE + KD (T=4) + align + unif, weights 1
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    if c.teacher.adapt:
      configlib.shrink_for_local_run(c.teacher.adapt, image_size=32)
  return c
