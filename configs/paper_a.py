r"""Paper A (Farhat & Chen, arXiv 2404.03263): distil a public pre-trained teacher into a small
student on one task, against the same student from scratch and pre-trained + fine-tuned.

  --config=configs/paper_a.py:teacher=T,student=S,data=D,arm=A[,teacher_dir=DIR][,epochs=E]
  teacher  resnet50 (microsoft/resnet-50) | vit_b16 (google/vit-base-patch16-224)
  student  resnet18 | mobilenet_v2 (randomly initialised; ImageNet layout at 224 px)
  data     cifar10 | cifar100 | mit_indoor67 | cub200 (TFDS caltech_birds2011) | caltech101 | dtd
  arm      distill  CE + KD (T = 4) + alignment + uniformity, all weights 1 (loss.*_weight),
                    each model's penultimate features through its own mlp projection head
                    (Linear(d,d)-ReLU-Linear(d,128)); the teacher is `teacher_dir`, run online
                    (frozen, eval mode) on the student's augmented batch
           scratch  the same student and schedule, CE only
           finetune the ImageNet student from the Hub (microsoft/resnet-18,
                    google/mobilenet_v2_1.0_224), AdamW head lr 1e-3, backbone lr 1e-4
                    (optimizer.backbone_lr_scale=0.1)
  teacher_dir  the adapted teacher (default runs/adapt_<teacher>_<data>)
  epochs   0 (default): 250 for distill/scratch, 30 for finetune (as configs/adapt.py)

Recipe (PAPERS.md): 224 px, CIFAR resized to 256 then random crop 224 + flip (eval: central
224 of 256), other tasks resized to 256 then random-resized-crop 224 + flip; ImageNet mean/std
(finetune: the checkpoint's own, data.normalization=auto); AdamW lr 1e-3, weight decay 1e-2,
constant; batch 64; 250 epochs. The paper gives no fine-tune epoch count: 30 is our choice.
Splits: TFDS train/test; Caltech-101 has no fixed split, the paper trains on 80% of each class:
here train+test pooled, 20% of each class held out (`val`, data.val_fraction=0.2, no test).
TFDS caltech101 has 102 labels (101 classes + a background class the paper's loader may drop).

Step 1, adapt the teacher (linear probe of a new head, configs/adapt.py), e.g. CIFAR-10:
  python -m kdjax.main --workdir=runs/adapt_resnet50_cifar10 \
      --config=configs/adapt.py:model=microsoft/resnet-50,data=cifar10
  python -m kdjax.main --workdir=runs/adapt_vit_b16_cifar10 \
      --config=configs/adapt.py:model=google/vit-base-patch16-224,data=cifar10
Other tasks: --workdir=runs/adapt_<teacher>_<task> with data=<the task's TFDS name>
(cub200: caltech_birds2011; mit_indoor67 once prepared, below); caltech101 also needs the split
above: --config.data.train_split=train+test --config.data.val_fraction=0.2
--config.data.test_split= (same subset_seed, so the teacher never trains on the held-out 20%).
Step 2, the three arms:
  python -m kdjax.main --workdir=runs/pa_r50_r18_cifar10_distill \
      --config=configs/paper_a.py:teacher=resnet50,student=resnet18,data=cifar10,arm=distill
  python -m kdjax.main --workdir=runs/pa_r18_cifar10_scratch \
      --config=configs/paper_a.py:student=resnet18,data=cifar10,arm=scratch
  python -m kdjax.main --workdir=runs/pa_r18_cifar10_finetune \
      --config=configs/paper_a.py:student=resnet18,data=cifar10,arm=finetune
  python -m kdjax.main --config=configs/paper_a.py:runlocal --workdir=/tmp/pa   # CPU smoke test

Data: `tfds build cifar10 --file_format=array_record` (likewise cifar100, caltech_birds2011,
caltech101, dtd; needs tensorflow-cpu and network once, see README). MIT Indoor-67 is not in
the TFDS catalog: download indoorCVPR_09.tar (Images/<class>/*.jpg) and its TrainImages.txt /
TestImages.txt lists from the dataset's page (web.mit.edu/torralba/www/indoor.html) into one
folder SRC, then write it as a local TFDS dataset (no TensorFlow needed; 67 classes, 5,360 train
/ 1,340 test):
  PYTHONPATH=. python configs/paper_a.py mit_indoor67 SRC ~/tensorflow_datasets

Expected runtime (our estimate, not measured: no GPU, Hub or dataset download here): 250 epochs
of CIFAR are 12.5M images at 224 px (195k steps of 64); ResNet-18 forward + backward (~11
GFLOPs) plus the ResNet-50 teacher's forward (~8 GFLOPs) per image: about 2-4 h on one
A100/H100-class GPU, 2-3x that with the ViT-B/16 teacher (~35 GFLOPs forward); the small tasks
(1.9k-7.3k training images) take 7-26x less. Scratch costs about half a distill run, finetune
(30 epochs of the student alone) well under a tenth.

Reported accuracies: neither /work/shared/seeds nor PAPERS.md quotes a per-task number for any
cell of this grid (teacher x student x task x {distill, scratch, finetune}): all are "not
reported" in our sources. What they do report: the distilled student "can achieve or surpass
the performance it would achieve if it was pre-trained then finetuned" (seeds/001, seeds/003
abstract), the effect "tends not to occur if the task is data-limited" (MIT Indoor, DTD,
Caltech-101; fixed there with synthetic images), and training "up to 94% faster than the
standard pre-training paradigm" (seeds/000, seeds/001).
"""

import os
import sys

from kdjax import configlib

TEACHERS = {"resnet50": "microsoft/resnet-50", "vit_b16": "google/vit-base-patch16-224"}
# student -> its ImageNet checkpoint on the Hub (arm=finetune)
STUDENTS = {"resnet18": "microsoft/resnet-18", "mobilenet_v2": "google/mobilenet_v2_1.0_224"}
# task -> (TFDS name, train split, test split, class-stratified hold-out of the train split)
TASKS = {
    "cifar10": ("cifar10", "train", "test", 0.0),
    "cifar100": ("cifar100", "train", "test", 0.0),
    "mit_indoor67": ("mit_indoor67", "train", "test", 0.0),  # local: see the docstring
    "cub200": ("caltech_birds2011", "train", "test", 0.0),
    "caltech101": ("caltech101", "train+test", "", 0.2),  # 80% of each class for training
    "dtd": ("dtd", "train", "test", 0.0),  # split 1: 1,880 train / 1,880 test
}
ARMS = ("distill", "scratch", "finetune")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name} {value!r}; valid: {sorted(valid)}")


def get_config(arg=None):
  arg = configlib.parse_arg(arg, teacher="resnet50", student="resnet18", data="cifar10",
                            arm="distill", teacher_dir="", epochs=0.0, runlocal=False)
  _check("teacher", arg.teacher, TEACHERS)
  _check("student", arg.student, STUDENTS)
  _check("data", arg.data, TASKS)
  _check("arm", arg.arm, ARMS)
  c = configlib.base()
  tfds_name, c.data.train_split, c.data.test_split, c.data.val_fraction = TASKS[arg.data]
  c.data.name = tfds_name
  c.data.load_size = 256
  c.data.image_size = 224
  c.data.mean, c.data.std = IMAGENET_MEAN, IMAGENET_STD
  if arg.data.startswith("cifar"):  # as configs/adapt.py: the teacher saw the same views
    c.data.augment.kind = "crop_flip"
    c.data.augment.pad = 0  # random 224 crop of the 256 px image
    c.data.eval_crop_fraction = 224 / 256
  else:
    c.data.augment.kind = "rrc_flip"

  c.model.name = arg.student
  c.model.stem = "imagenet"  # ResNet: 7x7/2 + max-pool at 224 px
  c.model.cifar_strides = False  # MobileNetV2: the ImageNet strides at 224 px
  if arg.arm == "finetune":
    c.model.pretrained = STUDENTS[arg.student]
    c.optimizer.backbone_lr_scale = 0.1  # backbone 1e-4, new head 1e-3
  if arg.arm == "distill":
    c.loss.kd_weight = 1.0
    c.loss.kd_temperature = 4.0
    c.loss.align_weight = 1.0
    c.loss.align_alpha = 2.0
    c.loss.unif_weight = 1.0
    c.loss.unif_t = 2.0
    c.loss.proj_head = "mlp"
    c.loss.proj_dim = 128
    c.teacher.models = arg.teacher_dir or f"runs/adapt_{arg.teacher}_{arg.data}"
    c.teacher.mode = "online"

  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_epochs = arg.epochs or (30.0 if arg.arm == "finetune" else 250.0)
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    c.data.load_size = 40
    c.data.image_size = 32
    c.model.width = 16  # narrow students: a CPU run compiles and steps faster
    c.model.width_multiplier = 0.25
  return c


def prepare_mit_indoor67(src: str, data_dir: str, overwrite: bool = False) -> str:
  """Writes MIT Indoor-67 (SRC/Images/<class>/*.jpg, SRC/TrainImages.txt, SRC/TestImages.txt,
  the official 80/20 per-class lists) as the TFDS dataset `mit_indoor67` (array_record) under
  data_dir, with kdjax's folder writer (kdjax/data/folder.py: every image decoded before anything
  is written, stored as RGB PNG, no TensorFlow). Returns the dataset's directory."""
  from kdjax import errors
  from kdjax.data import folder

  images = os.path.join(os.path.expanduser(src), "Images")
  if not os.path.isdir(images):
    raise errors.UserError(f"{src} has no Images/ folder: extract indoorCVPR_09.tar into it")
  classes = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))
  splits = {}
  for split, listing in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
    path = os.path.join(os.path.expanduser(src), listing)
    if not os.path.isfile(path):
      raise errors.UserError(f"{path} is missing: download it from the dataset's page")
    with open(path) as f:
      splits[split] = [folder.Example(rel, os.path.join(images, rel), rel.split("/")[0])
                       for rel in f.read().split()]
  return folder.write("mit_indoor67", data_dir, classes, splits, overwrite=overwrite,
                      description="MIT Indoor-67 (Quattoni & Torralba, CVPR 2009).",
                      homepage="http://web.mit.edu/torralba/www/indoor.html")


if __name__ == "__main__":
  from kdjax import errors

  if len(sys.argv) != 4 or sys.argv[1] != "mit_indoor67":
    sys.exit("usage: PYTHONPATH=. python configs/paper_a.py mit_indoor67 SRC DATA_DIR")
  try:
    print(f"prepared mit_indoor67 in {prepare_mit_indoor67(sys.argv[2], sys.argv[3])}")
  except errors.UserError as e:  # one line, no traceback, as kdjax's commands
    print(f"error: {e}", file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
