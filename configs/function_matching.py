r"""Function matching (Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022, arXiv 2106.05237): the student matches the teacher's function on the
same aggressively augmented, mixed-up image, with no labels and a very long schedule.

Recipe, as big_vision's configs/proj/distill/bit_i1k.py sets it (and our departures):
- consistent teaching: teacher and student see the same view, made on the device each step
  (teacher.mode=online; a cached teacher is refused with mixup: its outputs belong to unmixed
  views, see experiments/function_matching.py for how far a K-view cache is from this);
- inception crop + flip (`decode_jpeg_and_inception_crop(224)|flip_lr`): data.augment.kind
  rrc_flip, area (0.08, 1) (`crop` arg: a smaller lower bound for small images);
- mixup `dict(p=1.0)`: data.augment.mixup_alpha=1.0 (one Dirichlet(1, 1) ratio per batch,
  partner the batch rolled by one), every example mixed;
- loss `distance='kl', distance_kw=dict(t=1.0)`: KL(teacher || student) at temperature 1, no
  cross-entropy (configlib.METHODS["function_matching"]);
- optimiser: Adam, lr 0.03, weight decay 3e-4, 5,000 warm-up steps, cosine, batch 4096,
  gradient clipping at 1.0 (kdjax has no clipping: not applied). Here AdamW (decoupled decay)
  with big_vision's lr and decay, batch 512 and a warm-up of 2% of the run (lr not rescaled:
  tune it on a hold-out, `val=0.1`);
- patience: ImageNet 1,200 epochs in that config, up to 10,000 epochs on the small datasets of
  the paper (Table 1: flowers102, pets); default here 1,000 epochs (`epochs=`).

Student: the ResNet-18 (CIFAR stem) at 32 px; `teacher=RUN_DIR`: a kdjax run adapted to the task
(configs/adapt.py) or any Hugging Face classifier with the task's classes.

  python -m kdjax.main --config=configs/function_matching.py:teacher=runs/adapt_resnet50_cifar10 \
      --workdir=runs/fm_cifar10
  ... :teacher=DIR,epochs=300,val=0.1        a shorter run that holds out 10% for tuning
  ... :teacher=DIR,runlocal                  a few CPU steps
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, teacher="runs/adapt_resnet50_cifar10",
                            data="cifar10", epochs=1000.0,
                            val=0.0, crop=0.08)
  c = configlib.base()
  configlib.with_method(c, "function_matching")
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
  c.optimizer.learning_rate = 0.03
  c.optimizer.weight_decay = 3e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_epochs = 0.02 * arg.epochs
  c.eval_every_epochs = max(1.0, arg.epochs / 20)
  c.checkpoint_every_steps = 2000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    c.optimizer.warmup_epochs = None
  return c
