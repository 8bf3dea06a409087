r"""The offline demo: distillation on real handwritten digits, no network (kdjax/tools/demo.py
runs it).

Data: `kdjax_digits` (kdjax/data/embedded.py), the 1,797 real UCI handwritten digits that ship
inside scikit-learn, prepared as a local TFDS array_record dataset on first use: 1,437 train /
360 test, 8x8 grey-scale upsampled to 16 px, no flip (digits are not mirror-symmetric).

No pre-trained checkpoint can be downloaded here, so the teacher's extra knowledge is made in
the open: the teacher (`arm=teacher`, ResNet-18 width 32) is trained with labels on the whole
train split minus a 10% validation hold-out (1,294 images). The students see only a
data-limited subset with labels (`n_per_class` images of each digit, 20 by default: 200 images)
and, for the distillation terms, the same 200 images. The test split is never seen by either.
So the teacher knows more in one plain sense: it learned from 6.5x more labelled data of the
task. Arms (student: ResNet-18 width 16, 500 steps of 50, AdamW 1e-3 as paper A):
  scratch   cross-entropy only
  distill   paper A: CE + KD (T=4) + alignment + uniformity, teacher online
  aft       paper B: CE + beta R (beta 1), rho learned at 1e-2, teacher cached (K=32 views)
  kd        CE + KD (T=4), teacher online
  feature_kd  CE + feature-KD (paper B's baseline: linear map student -> teacher features, MSE),
            teacher cached (K=32 views)
  crd, srrl   paper A's baselines (CRD: CE + KD + CRD; SRRL: CE + SRRL + feature regression),
            teacher online; rkd, ft, btuning: paper B's baselines (CE + RKD / FT / B-Tuning),
            teacher cached (K=32);
            dkd, kd_ls, dkd_ls: DKD, KD and DKD with logit standardisation, teacher online.
            Each with its method's defaults (kdjax.configlib.METHODS, docs/distillation.md)
  unlabelled  paper A's loss (as distill, teacher online) with extra unlabelled inputs: the
            1,094 train images the 200 leave out (validation excluded) join the training rows
            without labels (data.unlabelled_rest: no CE on them, every distillation term uses
            them). Paper A's extra images are Stable Diffusion's; offline these are real ones,
            which the teacher learned from with labels. Same 500 steps of 50 as every arm, so
            the 200 labelled images make ~15% of each batch (~20 passes over them, not 125).

  python -m kdjax.tools.demo --workdir=runs/demo      # all arms and the table
  python -m kdjax.main --config=configs/demo.py:arm=teacher --workdir=runs/demo/teacher
  python -m kdjax.main --config=configs/demo.py:arm=distill,teacher_dir=runs/demo/teacher \
      --workdir=runs/demo/distill
"""

from kdjax import configlib

# the field's objectives, each with its preset of configlib.METHODS: paper A's baselines CRD
# and SRRL (teacher online), paper B's RKD, FT and B-Tuning (cached, as AFT), DKD and KD with
# logit standardisation
BASELINES = ("crd", "srrl", "rkd", "ft", "btuning", "dkd", "kd_ls", "dkd_ls")
CACHED_BASELINES = ("rkd", "ft", "btuning")
ARMS = ("teacher", "scratch", "distill", "aft", "kd", "feature_kd", "unlabelled", *BASELINES)


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, arm="teacher", teacher_dir="runs/demo/teacher",
                            n_per_class=20)
  if arg.arm not in ARMS:
    raise ValueError(f"unknown demo arm {arg.arm!r}; valid: {list(ARMS)}")
  c = configlib.base()
  c.data.name = "kdjax_digits"
  c.data.val_fraction = 0.1
  c.data.load_size = 16
  c.data.image_size = 16
  c.data.augment.kind = "crop_flip"
  c.data.augment.pad = 2
  c.data.augment.flip = False
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.5, 0.5, 0.5)
  c.eval_batch_size = 128
  c.log_every_steps = 50
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "cosine"
  if arg.arm == "teacher":
    c.model.width = 32
    c.batch_size = 64
    c.total_steps = 300
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
  else:
    c.model.width = 16
    c.data.n_per_class = arg.n_per_class
    c.batch_size = 50
    c.total_steps = 500
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 250
    if arg.arm != "scratch":
      c.teacher.models = arg.teacher_dir
    if arg.arm in ("distill", "unlabelled"):
      c.loss.kd_weight = c.loss.align_weight = c.loss.unif_weight = 1.0
      c.data.unlabelled_rest = arg.arm == "unlabelled"
    elif arg.arm == "kd":
      c.loss.kd_weight = 1.0
    elif arg.arm == "aft":
      c.loss.aft_weight = 1.0
      c.teacher.mode = "cached"
      c.teacher.cache_views = 32
    elif arg.arm == "feature_kd":
      c.loss.feature_kd_weight = 1.0
      c.teacher.mode = "cached"
      c.teacher.cache_views = 32
    elif arg.arm in BASELINES:  # the methods' own defaults (configlib.METHODS)
      configlib.with_method(c, arg.arm)
      if arg.arm in CACHED_BASELINES:  # paper B's baselines read cached features, as AFT
        c.teacher.mode = "cached"
        c.teacher.cache_views = 32
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c
