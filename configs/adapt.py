r"""Start from a Hub checkpoint: adapt a teacher to the task, or fine-tune a pre-trained student.

Paper A (Farhat & Chen, arXiv 2404.03263) step 1 adapts the ImageNet teacher to the task before
distilling: a linear probe of a new head on the frozen backbone (default, `mode=probe`: backbone
in eval mode, no gradient, its weights never checkpointed) or a full fine-tune
(`mode=finetune`). The run's workdir is then the teacher of a distillation config
(`teachers.load(WORKDIR)` gives the backbone with the adapted head).

The same config is paper A's "pre-trained + fine-tuned" student baseline: `name=resnet18`
with `model=microsoft/resnet-18` (or `name=mobilenet_v2,model=google/mobilenet_v2_1.0_224`),
`mode=finetune`: AdamW, head lr 1e-3, backbone lr 1e-4 (`optimizer.backbone_lr_scale=0.1`).

Recipe (paper A): 224 px (CIFAR resized to 256 then random crop 224 + flip; other tasks random
resized crop 224 + flip), batch 64, AdamW lr 1e-3, weight decay 1e-2, no schedule. Epochs are not
given for the probe; we use 10 (probe) / 30 (fine-tune). Normalisation follows the checkpoint's
preprocessor_config.json (`data.normalization=auto`).

  python -m kdjax.main --config=configs/adapt.py:model=microsoft/resnet-50,data=cifar10 \
      --workdir=runs/adapt_r50_cifar10
  python -m kdjax.main --workdir=runs/r18_pretrained_cifar10 \
      --config=configs/adapt.py:model=microsoft/resnet-18,name=resnet18,mode=finetune

Expected: not yet measured by us (no Hub or CIFAR download on our machines). A ResNet-50 linear
probe on CIFAR-10 reaches about 90% in the literature; runtime about 1 GPU-hour for 10 epochs
at 224 px (the frozen backbone's forward pass dominates).
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, model="microsoft/resnet-50", name="hub", mode="probe",
                            data="cifar10", runlocal=False)
  if arg.mode not in ("probe", "finetune"):
    raise ValueError(f"unknown mode {arg.mode!r}; valid: ['finetune', 'probe']")
  c = configlib.base()
  c.model.name = arg.name
  c.model.pretrained = arg.model
  c.model.freeze_backbone = arg.mode == "probe"
  c.data.name = arg.data
  c.data.image_size = 224
  if arg.data.startswith("cifar"):
    c.data.load_size = 256
    c.data.augment.kind = "crop_flip"
    c.data.augment.pad = 0  # random 224 crop of the 256 px image
    c.data.eval_crop_fraction = 224 / 256  # eval: the central 224 of the 256 px image
  else:
    c.data.load_size = 256
    c.data.augment.kind = "rrc_flip"
  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_epochs = 10.0 if arg.mode == "probe" else 30.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.optimizer.backbone_lr_scale = 0.1 if arg.mode == "finetune" else 1.0
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
    c.data.load_size = 40
    c.data.image_size = 32
  return c
