r"""Paper A (Farhat & Chen, arXiv 2404.03263): distil a public pre-trained teacher into a small
student on one task, against the same student from scratch and pre-trained + fine-tuned.

  --config=configs/paper_a.py:teacher=T,student=S,data=D,arm=A[,teacher_dir=DIR][,adapt=M]
      [,epochs=E][,synthetic=DIR[,synthetic_fraction=F]]
  teacher  resnet50 | vit_b16 (TEACHERS below)
  student  resnet18 | mobilenet_v2 (randomly initialised; ImageNet layout at 224 px)
  data     cifar10 | cifar100 | mit_indoor67 | cub200 (TFDS caltech_birds2011) | caltech101 | dtd
  arm      distill  CE + KD (T = 4) + alignment + uniformity, all weights 1 (loss.*_weight),
                    each model's penultimate features through its own mlp projection head
                    (Linear(d,d)-ReLU-Linear(d,128)); the teacher, adapted to the task, run
                    online (frozen, eval mode) on the student's augmented batch
           scratch  the same student and schedule, CE only
           finetune the ImageNet student from the Hub, AdamW backbone lr 1e-4, head lr 1e-3,
                    weight decay 5e-4
  teacher_dir  an adapted teacher's directory (configs/adapt.py), used as it is; default: none,
           the same command adapts the teacher first (`teacher.adapt`, adapt_config below)
           into WORKDIR/teacher (resumed if killed, skipped once finished), then distils
  adapt    probe (default: paper A's linear probe) | finetune: how that teacher is adapted
  synthetic    distill only: a kdjax.generate directory (configs/synth/paper_a.py) joined to the
           real training images, labelled by prompt, with DiffAugment (augment.kind=
           rrc_flip_diffaug) as the reference's synthetic-data runs; synthetic_fraction: the
           part of each class used (a 2x set at 0.5 is the 1x set: generation order)
  epochs   0 (default): 250, every arm (the reference's scripts)

Every value below is the reference's (sfarhat/dapt at ccdbeb1; file:line there) or says why
not. The full table: experiments/README.md "Paper A's recipe".
- Teachers: torchvision ResNet-50 IMAGENET1K_V2 and ViT-B/16 IMAGENET1K_V1 (utils/utils.py:53-56),
  which have no transformers-format copy on the Hub. Closest: microsoft/resnet-50 (a ResNet-50
  v1.5 on ImageNet-1k: the same data, not torchvision's stronger V2 recipe) and
  facebook/deit-base-patch16-224 (a plain ViT-B/16 trained on ImageNet-1k only, as
  IMAGENET1K_V1 is, with DeiT's recipe; its model card says it loads as
  ViTForImageClassification: not checked here, no network).
  google/vit-base-patch16-224 is ImageNet-21k pre-trained: more data than the reference's.
- Students: torchvision resnet18 / mobilenet_v2, random init (distill.py:62); the fine-tune
  baseline starts from ResNet18 DEFAULT (IMAGENET1K_V1) / MobileNet_V2 DEFAULT (IMAGENET1K_V2)
  (utils/utils.py:57-60): here microsoft/resnet-18 / google/mobilenet_v2_1.0_224 (ImageNet-1k).
- Optimiser: torch AdamW with its defaults, lr 1e-3, weight decay 1e-2 on every parameter
  (biases, norms and both projection heads included: optimizer.decay_norm_and_bias=True), no
  schedule, batch 64, 250 epochs (distill.py:130-131,293,296; train_fr.py:56-62: scratch); the
  script's --learning_rate / --weight_decay flags only reach its SGD branch. Fine-tune:
  backbone 1e-4, head 1e-3, weight decay 5e-4, 250 epochs (train_ft.py:51-63,162,172).
- Losses (distill.py:222,385-399, kd_losses/): CE 1 + KD 1 (T = 4, x T^2) + align 1 (alpha 2) +
  unif 1 (t 2, mean of student and teacher); mlp heads to 128-d (models/projector.py:32-40).
- Data (utils/datasets.py:691-857): ImageNet mean/std; CIFAR Resize(256) + RandomCrop(224) +
  flip; the others RandomResizedCrop(224) (torchvision defaults, 10 tries) + flip; test
  Resize(256) + CenterCrop(224) everywhere. The non-CIFAR images are stored whole with their
  short side at 256 (data.load_resize=shorter_full; a canvas up to 2:1, data.max_aspect, longer
  ones centre-cropped to 2:1): the random-resized crop is drawn from the whole image and the
  eval view is the central 224 of it. Not the same: the crop is taken from the image at short
  side 256, not from the original file (small crops are upsampled from fewer pixels).
- Caltech-101: 101 classes (torchvision drops BACKGROUND_Google: data.exclude_classes) and the
  first 80% of each class in file order for training, the rest for testing (datasets.py:
  845-857); here train+test pooled, 20% of each class held out by data.subset_seed (`val`, no
  test split: TFDS's order is not the file order). DTD: partition 1 (TFDS dtd's split).
- Synthetic data: 1x = the real training count per class (MIT Indoor-67 80, DTD 40; the
  reference's sample_stable_diff.py:119, scripts/generate.sh), 2x twice that, labelled by
  prompt, concatenated with the real images (generated_distill.py:56-57), DiffAugment "S" on the
  whole batch (generated_distill.py:37,143-153).
- Reporting: the reference evaluates on test every epoch and keeps the best accuracy
  (distill.py:255-265); here every epoch too (eval_every_epochs=1), and the grid reports the
  final accuracy (ours) and the best (the reference's).
- Not reproduced: the reference's adapted ResNet-50 re-estimates its BatchNorm statistics on
  the task in the probe's first epoch (train_lp.py:96, net.train()) and probes one cached view
  per image (train_lp.py:110-115); ours is a plain linear probe on every epoch's augmented view
  (configs/adapt.py). One seed in the reference (default 9); the grid runs 3.

The distill arm in one command: step 1 adapts the teacher (a linear probe of a new head,
adapt_config below) into WORKDIR/teacher, step 2 distils from it (WORKDIR/adapt.json records the
teacher's source, step and accuracy). Run again, a finished adaptation is not trained again;
`--config.teacher.adapt.KEY=...` tunes it (e.g. total_epochs). Offline, a Hub teacher or dataset
that is missing is named, with the command that fetches it, before anything is written.
  python -m kdjax.main --workdir=runs/pa_r50_r18_cifar10_distill \
      --config=configs/paper_a.py:teacher=resnet50,student=resnet18,data=cifar10,arm=distill
  python -m kdjax.main --workdir=runs/pa_r18_cifar10_scratch \
      --config=configs/paper_a.py:student=resnet18,data=cifar10,arm=scratch
  python -m kdjax.main --config=configs/paper_a.py:runlocal --workdir=/tmp/pa   # CPU smoke test
      (a 4-step probe of microsoft/resnet-50 at 32 px, then 4 distillation steps)
An adapted teacher shared by several arms and seeds is made once with configs/adapt.py and
passed as `teacher_dir` (no adaptation then):
  python -m kdjax.main --workdir=runs/adapt_resnet50_cifar10 \
      --config=configs/adapt.py:model=microsoft/resnet-50,task=cifar10
  python -m kdjax.main --workdir=runs/pa_r50_r18_cifar10_distill_s1 --config.seed=1 \
      --config=configs/paper_a.py:arm=distill,teacher_dir=runs/adapt_resnet50_cifar10
experiments/paper_a.py runs the whole grid (adaptation, arms, synthetic sets) in order, that way.

Data: `tfds build cifar10 --file_format=array_record` (likewise cifar100, caltech_birds2011,
caltech101, dtd; needs tensorflow-cpu and network once, see docs/data.md). MIT Indoor-67 is not in
the TFDS catalog: download indoorCVPR_09.tar (Images/<class>/*.jpg) and its TrainImages.txt /
TestImages.txt lists from the dataset's page (web.mit.edu/torralba/www/indoor.html) into one
folder SRC, then write it as a local TFDS dataset (no TensorFlow needed; 67 classes, 5,360 train
/ 1,340 test):
  python -m kdjax.data.prepare mit_indoor67 SRC ~/tensorflow_datasets

Expected runtime: `python experiments/paper_a.py run --dry_run` prints every step's FLOPs and
GPU-hours (an estimate from the configs, not measured: no GPU, Hub or dataset download here).

Reported accuracies: the sources we read (the paper's abstract and a summary, arXiv 2404.03263)
quote no per-task number for any cell of this grid: all are "not reported"
(experiments/paper_numbers.py). What they do report: the distilled student "can achieve or
surpass the performance it would achieve if it was pre-trained then finetuned" (abstract), the
effect "tends not to
occur if the task is data-limited" (MIT Indoor, DTD, Caltech-101; fixed there with synthetic
images), and training "up to 94% faster than the standard pre-training paradigm".
"""


from kdjax import configlib

# the reference's torchvision ResNet-50 IMAGENET1K_V2 / ViT-B/16 IMAGENET1K_V1 (see above)
TEACHERS = {"resnet50": "microsoft/resnet-50", "vit_b16": "facebook/deit-base-patch16-224"}
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
EXCLUDE = {"caltech101": ("background_google",)}  # torchvision's 101 classes
EPOCHS = 250.0  # every arm: scripts/{distill,train_fr,train_ft,train_lp}.sh --epochs=250
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name} {value!r}; valid: {sorted(valid)}")


def get_config(arg=None):
  arg = configlib.parse_arg(arg, teacher="resnet50", student="resnet18", data="cifar10",
                            arm="distill", teacher_dir="", adapt="probe", epochs=0.0,
                            synthetic="", synthetic_fraction=0.0, runlocal=False)
  _check("teacher", arg.teacher, TEACHERS)
  _check("student", arg.student, STUDENTS)
  _check("data", arg.data, TASKS)
  _check("arm", arg.arm, ARMS)
  if arg.synthetic and (arg.arm != "distill" or arg.data.startswith("cifar")):
    raise ValueError("synthetic is for arm=distill on mit_indoor67, dtd or caltech101 (the "
                     "reference's generated_distill.py:212)")
  c = configlib.base()
  set_data(c.data, arg.data)
  if arg.synthetic:
    c.data.synthetic = arg.synthetic
    c.data.synthetic_fraction = arg.synthetic_fraction or None
    c.data.augment.kind = "rrc_flip_diffaug"

  c.model.name = arg.student
  c.model.stem = "imagenet"  # ResNet: 7x7/2 + max-pool at 224 px
  c.model.cifar_strides = False  # MobileNetV2: the ImageNet strides at 224 px
  if arg.arm == "finetune":
    c.model.pretrained = STUDENTS[arg.student]
    # the checkpoint's own mean/std: each set of weights with the inputs it was trained on
    # (google/mobilenet_v2: 0.5/0.5; the reference's torchvision weights: ImageNet's)
    c.data.normalization = "auto"
    c.optimizer.backbone_lr_scale = 0.1  # backbone 1e-4, new head 1e-3 (train_ft.py:51-63)
  if arg.arm == "distill":
    c.loss.kd_weight = 1.0
    c.loss.kd_temperature = 4.0
    c.loss.align_weight = 1.0
    c.loss.align_alpha = 2.0
    c.loss.unif_weight = 1.0
    c.loss.unif_t = 2.0
    c.loss.proj_head = "mlp"
    c.loss.proj_dim = 128
    if arg.teacher_dir:  # adapted already (configs/adapt.py): used as it is
      c.teacher.models = arg.teacher_dir
    else:  # step 1 in the same command: adapted into WORKDIR/teacher first
      c.teacher.adapt = adapt_config(TEACHERS[arg.teacher], arg.adapt, arg.data)
    c.teacher.mode = "online"

  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_epochs = arg.epochs or EPOCHS
  set_optimizer(c.optimizer)
  if arg.arm == "finetune":
    c.optimizer.weight_decay = 5e-4  # train_ft.py:162 (passed to its AdamW: line 63)
  c.eval_every_epochs = 1.0  # the reference tests every epoch (distill.py:255)
  c.checkpoint_every_steps = 5000
  if arg.runlocal:
    configlib.shrink_for_local_run(c, image_size=32)
    c.model.width = 16  # narrow students: a CPU run compiles and steps faster
    c.model.width_multiplier = 0.25
    if c.teacher.adapt:
      configlib.shrink_for_local_run(c.teacher.adapt, image_size=32)
  return c


def adapt_config(source: str, mode: str, task: str, name: str = "hub"):
  """Step 1, the reference's adaptation of `source` to `task` (sfarhat/dapt train_lp.py /
  train_ft.py; configs/adapt.py's `task=T`): the task's data exactly as the student's
  (set_data: splits, classes, views, ImageNet mean/std), torch AdamW defaults (lr 1e-3, weight
  decay 1e-2 on every parameter, no schedule), batch 64, 250 epochs (train_lp.py:55-56,175,178);
  fine-tune: backbone 1e-4, head 1e-3, weight decay 5e-4 and the checkpoint's own normalisation
  (train_ft.py:51-63,162,172)."""
  c = configlib.adapt_config(source, mode, name=name)
  set_data(c.data, task)
  if mode == "finetune":
    c.data.normalization = "auto"  # the checkpoint's own, as arm=finetune
  set_optimizer(c.optimizer)
  if mode == "finetune":
    c.optimizer.weight_decay = 5e-4  # train_ft.py:162
    c.optimizer.backbone_lr_scale = 0.1  # backbone 1e-4, head 1e-3 (train_ft.py:51-63)
  c.total_epochs = EPOCHS  # train_lp.py:178, train_ft.py:172 (scripts: --epochs=250)
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  return c


def set_data(d, task: str) -> None:
  """The reference's data of `task` (utils/datasets.py): splits, sizes, views, normalisation;
  shared with configs/adapt.py's probe so the teacher adapts on the student's views."""
  tfds_name, d.train_split, d.test_split, d.val_fraction = TASKS[task]
  d.name = tfds_name
  d.exclude_classes = EXCLUDE.get(task, ())
  d.load_size = 256
  d.image_size = 224
  d.eval_crop_fraction = 224 / 256  # Resize(256) + CenterCrop(224)
  d.mean, d.std = IMAGENET_MEAN, IMAGENET_STD
  d.normalization = "config"
  if task.startswith("cifar"):  # Resize(256) + RandomCrop(224) + flip (square images)
    d.load_resize = "shorter"  # bilinear, as torchvision's Resize
    d.augment.kind = "crop_flip"
    d.augment.pad = 0
  else:  # RandomResizedCrop(224) + flip, from the whole aspect-kept image
    d.load_resize = "shorter_full"
    d.augment.kind = "rrc_flip"


def set_optimizer(o) -> None:
  """torch.optim.AdamW(params) with its defaults, as every AdamW of the reference is built
  (distill.py:130-131): lr 1e-3, weight decay 1e-2 on every parameter, no schedule."""
  o.name = "adamw"
  o.learning_rate = 1e-3
  o.weight_decay = 1e-2
  o.decay_norm_and_bias = True
  o.b1, o.b2 = 0.9, 0.999
  o.schedule = "constant"

