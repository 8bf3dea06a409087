r"""Start from a Hub checkpoint: adapt a teacher to the task, or fine-tune a pre-trained student.

Paper A (Farhat & Chen, arXiv 2404.03263) step 1 adapts the ImageNet teacher to the task before
distilling: a linear probe of a new head on the frozen backbone (default, `mode=probe`: backbone
in eval mode, no gradient, its weights never checkpointed) or a full fine-tune
(`mode=finetune`). The run's workdir is then the teacher of a distillation config
(`teachers.load(WORKDIR)` gives the backbone with the adapted head). The distillation configs
(configs/resnet18_cifar.py, configs/paper_a.py) run this step themselves, into WORKDIR/teacher
(their `teacher.adapt`, built by the same functions: configlib.adapt_config, paper_a.py's
adapt_config); this config is for an adapted teacher of its own, shared by several runs
(`teacher_dir=DIR` in their argument), or a pre-trained student.

The same config is paper A's "pre-trained + fine-tuned" student baseline: `name=resnet18`
with `model=microsoft/resnet-18` (or `name=mobilenet_v2,model=google/mobilenet_v2_1.0_224`),
`mode=finetune`: AdamW, head lr 1e-3, backbone lr 1e-4 (`optimizer.backbone_lr_scale=0.1`).

`task=T` (a configs/paper_a.py task: cifar10, cifar100, mit_indoor67, cub200, caltech101, dtd)
gives paper A's reference recipe (sfarhat/dapt train_lp.py / train_ft.py): the task's data
exactly as the student's (configs/paper_a.py set_data: splits, 101 Caltech classes, views,
ImageNet mean/std), torch AdamW defaults (lr 1e-3, weight decay 1e-2 on every parameter, no
schedule), batch 64, 250 epochs (train_lp.py:55-56,175,178); fine-tune: backbone 1e-4, head
1e-3, weight decay 5e-4, 250 epochs (train_ft.py:51-63,162,172). Not reproduced: the reference
probes one cached augmented view per image and re-estimates the ResNet's BatchNorm statistics
in its first epoch (train_lp.py:96,110-115); here the backbone stays in eval mode and every
epoch's view is new.
`data=NAME` (any TFDS dataset; kdjax.configlib.adapt_config): the same optimiser at 224 px
(CIFAR resized to 256 then random crop 224 + flip; other tasks random resized crop 224 + flip),
10 epochs (probe) / 30 (fine-tune), the checkpoint's own normalisation
(`data.normalization=auto`): our choice, for teachers outside paper A's grid
(experiments/paper_b.py's kd arm).

  python -m kdjax.main --config=configs/adapt.py:model=microsoft/resnet-50,task=cifar10 \
      --workdir=runs/adapt_resnet50_cifar10
  python -m kdjax.main --workdir=runs/r18_pretrained_cifar10 \
      --config=configs/adapt.py:model=microsoft/resnet-18,name=resnet18,mode=finetune

Expected: not yet measured by us (no Hub or CIFAR download on our machines). A ResNet-50 linear
probe on CIFAR-10 reaches about 90% in the literature; runtime about 1 GPU-hour for 10 epochs
at 224 px (the frozen backbone's forward pass dominates).
"""

import os

from kdjax import configlib


def _paper_a():
  """configs/paper_a.py (its task table and paper A's adaptation recipe)."""
  return configlib.load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "paper_a.py"), "kdjax_configs_paper_a")


def get_config(arg=None):
  arg = configlib.parse_arg(arg, model="microsoft/resnet-50", name="hub", mode="probe",
                            data="cifar10", task="", runlocal=False)
  if arg.task:
    pa = _paper_a()
    if arg.task not in pa.TASKS:
      raise ValueError(f"unknown task {arg.task!r}; valid: {sorted(pa.TASKS)}")
    c = pa.adapt_config(arg.model, arg.mode, arg.task, name=arg.name)
  else:
    c = configlib.adapt_config(arg.model, arg.mode, arg.data, name=arg.name)
  if arg.runlocal:
    configlib.shrink_for_local_run(c, image_size=32)
  return c
