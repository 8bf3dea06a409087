r"""Paper B (Qiu et al., ICML 2024, arXiv 2406.07337): Adaptive Feature Transfer (AFT) from large
pre-trained models into a small pre-trained downstream model, and its baselines.

  --config=configs/paper_b.py:teacher=T[+T2...],student=S,data=D,arm=A[,beta=B][,val=V]
  teacher  one key or several joined with '+' (their features are concatenated, the reference's
           data.py:29): dinov2_s|b|l|g, clip_l|h|g, openai_clip_l (TEACHERS below)
  student  vit_s | resnet50 (STUDENTS below), pre-trained (model.name=hub) with a new head
  data     cifar10 | cifar100 | flowers102 | pets | aircraft | dtd | food101 (DATASETS below)
  arm      aft           CE + beta * R (loss.aft_weight), rho = sigmoid(s) per teacher feature,
                         linear kernel, s at loss.prior_learning_rate = 1e-2
           aft_no_kernel CE + beta * MSE(batch-centred g, batch-centred V phi + b), V learned at
                         1e-2 (loss.aft_kernel=none; the reference's `aft_no_kernel`)
           feature_kd    CE + beta * MSE of a learned linear map student -> teacher features
                         (loss.feature_kd_weight): the paper's "KD" baseline; its map trains at
                         the model's lr, as the reference sets prior_lr = lr for kd
           kd            CE + beta * Hinton KD (T = 4) on task heads: the teachers must first be
                         adapted to the task (configs/adapt.py); ours, not one of the paper's
           stl           standard transfer learning: the student fine-tuned, CE only
  beta     strength of the arm's transfer term (default 10: the reference README's example)
  val      1 (default): tune: 10% of the training split held out (fixed by data.subset_seed,
           not by the run's seed), no test evaluation; 0: final: the whole training split,
           evaluated on the test split. The reference tunes with use_val=True and trains its
           final runs with train_frac=1, use_val=False (README.md:52-53, run.py:28,61-65).
  teacher_dir  kd only: comma-separated adapted teachers (default runs/adapt_<key>_<data>)

Every value below is the reference's (amazon-science/adaptive-feature-transfer at c0ce571;
file:line there) or says why not. The full table: experiments/README.md "Paper B's recipe".
- Teachers: timm ids from the reference README.md:102-131, mapped to the transformers-format
  Hub repos of the same weights. DINOv2 (timm vit_*_patch14_dinov2.lvd142m = facebook/dinov2-*):
  518 px, crop_pct 1.0, bicubic, ImageNet mean/std (timm vision_transformer.py:1315-1338 at
  v1.0.3). CLIP (timm vit_{large,huge,giant}_patch14_clip_224.laion2b, whose hf_hub_ids are the
  laion repos below; "ViT-G CLIP" is ViT-g/14, 1408-d, not bigG): 224 px, crop_pct 1.0,
  bicubic; mean/std: OpenAI CLIP's for H and g, timm's Inception 0.5/0.5 for L (timm
  vision_transformer.py:1515-1526). Features: the final-LayerNorm CLS token (CLIP: before the
  projection), as timm's num_classes=0 pooled output (save_features.py:67, models.py:157-167).
  `teacher.views` gives each teacher that view, made on the device from the student's image
  (its central 224 px): the reference's teachers read the original image (DINOv2: its central
  square at 518 px), so ours see a little less of it, upsampled.
- Students: the reference's timm vit_small_patch16_224.augreg_in1k and resnet50.a1_in1k
  (README.md:105,107) have no transformers-format port. vit_s = facebook/deit-small-patch16-224:
  a supervised ViT-S/16 trained on ImageNet-1k only, like augreg_in1k (its model card: loads as
  ViTForImageClassification; not checked here: no network). resnet50 = microsoft/resnet-50
  (ImageNet-1k, a ResNet-50 v1.5, not timm's stronger A1 recipe). Both differ in pre-training
  recipe, not in data.
- Student input: the reference trains without augmentation (run.py:16 asserts it for every
  transfer method) on the student's timm eval transform: resize the short side to 224/crop_pct,
  centre-crop 224 (ViT-S: crop_pct 0.9; ResNet-50: 0.95). Here: data.load_resize=shorter at
  load_size = int(224 / crop_pct) (timm's floor), data.load_filter=bicubic (timm's), and
  augment.kind=none = that central crop (the eval view).
- Optimiser: Adam (coupled weight decay 0) lr 1e-4, batch 128 (README.md:43,59-62), cosine to 0
  without warm-up (train.py:138). The reference runs int(5000 / batches_per_epoch + 0.5) whole
  epochs and steps its cosine once per epoch (train.py:119-120,170): here 5,000 steps, cosine per
  step (CIFAR: 5,083 vs 5,000 steps; the schedules differ by under one epoch's staircase).
- rho: sigmoid(s), s = 0 at init, learned (README.md:56 learn_scales=True) at prior_lr 1e-2
  (run.py:15); kd/rkd/ft: prior_lr = lr (run.py:100-101).
- Splits (data.py:138-158): CIFAR train/test; Flowers train (1,020; the official val unused) /
  test; Pets trainval / test (TFDS train/test); Aircraft trainval / test, variant level (100
  classes; local dataset, see below); DTD partition 1 train / test (TFDS dtd: train/test);
  Food-101 train / test (TFDS validation). Validation: 10% of the training split (data.py:281:
  random_split with seed 42; here class-stratified, data.subset_seed=0).
- Not reproduced: the reference replays the batches of a loader with <= 100 batches in the same
  order every epoch (run.py:108-109: Flowers, Pets, Aircraft, DTD); kdjax reshuffles every
  epoch. Its intermediate evaluations look at 3,000 test points (train.py:154-157); ours at all.
- Reporting: the reference prints the final test accuracy (train.py:173-177); kdjax records
  every evaluation, the grid reports final and best.
- beta: the reference has no sweep (only README.md:44's prec=10); the paper tunes it. The grid
  (experiments/paper_b.py) sweeps it on `val=1` runs and trains the final runs with the best.

Aircraft is not in the TFDS catalog: download fgvc-aircraft-2013b.tar.gz (www.robots.ox.ac.uk/
~vgg/data/fgvc-aircraft/), extract it to SRC and write it as a local TFDS dataset (no TensorFlow):
  python -m kdjax.data.prepare fgvc_aircraft SRC ~/tensorflow_datasets

  python -m kdjax.main --workdir=runs/pb_aft_dinov2l_vits_cifar10 \
      --config=configs/paper_b.py:teacher=dinov2_l,student=vit_s,data=cifar10,arm=aft,val=0
  python -m kdjax.main --workdir=runs/pb_fkd_dinov2l_vits_pets \
      --config=configs/paper_b.py:teacher=dinov2_l,data=pets,arm=feature_kd,beta=3
  python -m kdjax.main --config=configs/paper_b.py:runlocal --workdir=/tmp/pb   # CPU smoke test
Data: `tfds build cifar10 --file_format=array_record` (likewise cifar100, oxford_flowers102,
oxford_iiit_pet, dtd, food101; tensorflow-cpu and network once, see docs/data.md). Hub weights: `hf
download <id> --include '*.json' '*.safetensors'` where there is network (kdjax's error names it).

Expected runtime (our estimate, not measured: no GPU, Hub or dataset download here): 5,000
steps of 128 are 640k images through ViT-S/16 at 224 px (~14 GFLOPs forward + backward each):
about 10-20 min on one A100/H100-class GPU, plus the one-off teacher cache over the training
images (DINOv2 at 518 px costs 6.3x its 224 px forward). `python experiments/paper_b.py run
--dry_run` prints every step's FLOPs.

Reported numbers: the sources we read (the abstract of arXiv 2406.07337 and the method) quote no
accuracy for any cell: all are "not reported" (experiments/paper_numbers.py).
"""


from kdjax import configlib

# key -> (Hub id, input view "SIZE/CROP[/NORM]" as timm's pretrained cfg gives the reference's
# model: teacher.views). timm ids: the reference README.md:108-114.
TEACHERS = {
    "dinov2_s": ("facebook/dinov2-small", "518/1.0"),  # vit_small_patch14_dinov2.lvd142m
    "dinov2_b": ("facebook/dinov2-base", "518/1.0"),  # vit_base_patch14_dinov2.lvd142m
    "dinov2_l": ("facebook/dinov2-large", "518/1.0"),  # vit_large_patch14_dinov2.lvd142m
    "dinov2_g": ("facebook/dinov2-giant", "518/1.0"),  # vit_giant_patch14_dinov2.lvd142m
    # vit_large_patch14_clip_224.laion2b: timm normalises with Inception's 0.5/0.5
    "clip_l": ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "224/1.0/inception"),
    "clip_h": ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "224/1.0"),  # ..._huge_..._224.laion2b
    "clip_g": ("laion/CLIP-ViT-g-14-laion2B-s12B-b42K", "224/1.0"),  # ..._giant_..._224.laion2b
    "openai_clip_l": ("openai/clip-vit-large-patch14", "224/1.0"),  # not in the reference
}
# key -> (Hub id, timm crop_pct of the reference's student: its eval view is the training view)
STUDENTS = {"vit_s": ("facebook/deit-small-patch16-224", 0.9),  # augreg_in1k: crop_pct 0.9
            "resnet50": ("microsoft/resnet-50", 0.95)}  # a1_in1k: crop_pct 0.95
# dataset -> (TFDS name, train split, test split), the reference's splits (data.py:138-158)
DATASETS = {
    "cifar10": ("cifar10", "train", "test"),
    "cifar100": ("cifar100", "train", "test"),
    "flowers102": ("oxford_flowers102", "train", "test"),
    "pets": ("oxford_iiit_pet", "train", "test"),  # TFDS train = the official trainval
    "aircraft": ("fgvc_aircraft", "trainval", "test"),  # local: python -m kdjax.data.prepare
    "dtd": ("dtd", "train", "test"),  # TFDS dtd = partition 1, as torchvision's default
    "food101": ("food101", "train", "validation"),  # TFDS validation = the official test
}
ARMS = ("aft", "aft_no_kernel", "feature_kd", "kd", "stl")
STRENGTH_ARMS = ("aft", "aft_no_kernel", "feature_kd", "kd")  # arms with a beta
VAL_FRACTION = 0.1  # the reference's use_val=True hold-out (run.py:28)
PRIOR_LR = 1e-2  # run.py:15 prior_lr
LEARNING_RATE = 1e-4  # README.md:43


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name} {value!r}; valid: {sorted(valid)}")


def get_config(arg=None):
  arg = configlib.parse_arg(arg, teacher="dinov2_l", student="vit_s", data="cifar10", arm="aft",
                            beta=10.0, val=True, teacher_dir="", runlocal=False)
  keys = [k for k in arg.teacher.split("+") if k]
  for key in keys:
    _check("teacher", key, TEACHERS)
  _check("student", arg.student, STUDENTS)
  _check("data", arg.data, DATASETS)
  _check("arm", arg.arm, ARMS)
  if arg.beta < 0:
    raise ValueError(f"beta must be >= 0, got {arg.beta}")
  if arg.teacher_dir and arg.arm != "kd":
    raise ValueError("teacher_dir is for arm=kd (adapted teachers); aft and feature_kd read "
                     "the pre-trained teachers' features")
  c = configlib.base()
  c.data.name, c.data.train_split, test_split = DATASETS[arg.data]
  # tune (val): 10% held out, no test evaluation; final: the whole training split, test
  c.data.val_fraction = VAL_FRACTION if arg.val else 0.0
  c.data.test_split = "" if arg.val else test_split
  student, crop_pct = STUDENTS[arg.student]
  c.data.image_size = 224
  c.data.load_resize = "shorter"  # aspect kept: the short side to 224 / crop_pct ...
  c.data.load_size = int(224 / crop_pct)  # ... (timm: floor(224 / crop_pct)), bicubic ...
  c.data.load_filter = "bicubic"
  c.data.eval_crop_fraction = 224 / c.data.load_size  # ... then the central 224
  c.data.augment.kind = "none"  # the reference: no augmentation, the eval view (run.py:16)

  c.model.name = "hub"
  c.model.pretrained = student

  if arg.arm == "aft":
    c.loss.aft_weight = arg.beta
    c.loss.aft_kernel = "linear"
    c.loss.aft_rho = "diagonal"
  elif arg.arm == "aft_no_kernel":
    c.loss.aft_weight = arg.beta
    c.loss.aft_kernel = "none"
  elif arg.arm == "feature_kd":
    c.loss.feature_kd_weight = arg.beta
  elif arg.arm == "kd":
    c.loss.kd_weight = arg.beta
    c.loss.kd_temperature = 4.0
  # kd, rkd, ft: the reference trains their maps at the model's lr (run.py:100-101)
  c.loss.prior_learning_rate = LEARNING_RATE if arg.arm in ("feature_kd", "kd") else PRIOR_LR
  if arg.arm == "kd":
    c.teacher.models = arg.teacher_dir or ",".join(f"runs/adapt_{k}_{arg.data}" for k in keys)
  elif arg.arm != "stl":
    c.teacher.models = ",".join(TEACHERS[k][0] for k in keys)
    c.teacher.views = ",".join(TEACHERS[k][1] for k in keys)
  c.teacher.mode = "cached"
  c.teacher.cache_views = 1

  c.batch_size = 128
  c.eval_batch_size = 256
  c.total_steps = 5000
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = LEARNING_RATE
  c.optimizer.schedule = "cosine"
  c.optimizer.weight_decay = 0.0
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 1000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    c.data.load_size = 36
    c.data.image_size = 32
    c.data.eval_crop_fraction = 32 / 36
    c.teacher.views = ",".join("32/1.0" for _ in (keys if c.teacher.views else ()))
  return c
