r"""Function matching (Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022, arXiv 2106.05237): the student matches the teacher's function on the
same aggressively augmented, mixed-up image, with no labels and a very long schedule.

Recipe as big_vision (google-research/big_vision at 0127fb6) sets it in
configs/proj/distill/bigsweep_food_sun.py, whose docstring says it holds the paper's
recommended settings (its Fig. 3 / Table 4), at the same batch of 512 for the variant of the same
length ("medium", 1,000 epochs), and our departures:
- consistent teaching: teacher and student see the same view, made on the device each step
  (teacher.mode=online; a cached teacher is refused with mixup: its outputs belong to unmixed
  views; experiments/function_matching.py measures how far a K-view cache is from this);
- inception crop + flip (`decode|inception_crop(128)|flip_lr`, lines 48 and 82): data.augment.kind
  rrc_flip, area (0.08, 1) (`crop=` sets the lower bound);
- mixup `dict(p=1.0)` (line 85): data.augment.mixup_alpha=1.0, every example mixed
  (big_vision/utils.py:1146-1154: one Beta(1, 1) ratio per batch, max(a, 1 - a), the batch rolled
  by one; kdjax/data/augment.py mixup);
- loss `distance='kl'` (lines 88-92): T^2 KL(teacher || student) at temperature T, no
  cross-entropy (configlib.METHODS["function_matching"]); T = 1 as the ImageNet config sets it
  (configs/proj/distill/bit_i1k.py:79-80), where this file's medium variant has T = 10 (T swept
  over {1, 2, 5, 10}, line 197, and picked on a 10% minival; `t=`);
- optimiser (lines 95-107): Adam (`scale_by_adam`), lr 1e-3, decoupled weight decay 3e-4 scaled
  by the schedule on the kernels only (big_vision/optax.py:132-149: optax.adamw with kdjax's
  default mask, which skips biases and norm scales), 1,500 warm-up steps, cosine; gradient
  clipping at norm 1.0 (line 95) is not applied (kdjax has no clipping);
- patience: 1,000 epochs (line 62; `epochs=`). The paper's sweeps go much longer on small sets:
  food101/sun397 up to 3,000 epochs, pets 30,000 and flowers102 1,000,000
  (bigsweep_flowers_pet.py:64-67), ImageNet 1,200 (bit_i1k.py:48, "a good middle-ground").

Student: the ResNet-18 (CIFAR stem) at 32 px, trained from scratch as big_vision's students are;
`teacher=RUN_DIR`: a kdjax run adapted to the task (configs/adapt.py) or any Hugging Face
classifier with the task's classes.

  python -m kdjax.main --config=configs/function_matching.py:teacher=runs/adapt_resnet50_cifar10 \
      --workdir=runs/fm_cifar10
  ... :teacher=DIR,epochs=300,val=0.1        a shorter run that holds out 10% for tuning
  ... :teacher=DIR,t=10                      another temperature (the sweeps' range: 1 to 10)
  ... :teacher=DIR,runlocal                  a few CPU steps
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, teacher="runs/adapt_resnet50_cifar10",
                            data="cifar10", epochs=1000.0, t=1.0, val=0.0, crop=0.08)
  c = configlib.base()
  configlib.with_method(c, "function_matching")  # KD at T=1, CE weight 0
  c.loss.kd_temperature = arg.t
  c.teacher.models = arg.teacher
  c.teacher.mode = "online"
  c.data.name = arg.data
  c.data.val_fraction = arg.val
  c.data.augment.kind = "rrc_flip"
  c.data.augment.scale = (arg.crop, 1.0)
  c.data.augment.mixup_alpha = 1.0
  c.data.augment.mixup_prob = 1.0
  c.batch_size = 512
  c.total_epochs = arg.epochs
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 3e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 1500
  c.eval_every_epochs = max(1.0, arg.epochs / 20)
  c.checkpoint_every_steps = 2000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    c.optimizer.warmup_steps = None
  return c
