r"""ResNet-18 (CIFAR stem) trained from scratch with cross-entropy on TFDS cifar10.

The scratch baseline of both papers' CIFAR-10 experiments: SGD + Nesterov 0.9, lr 0.1 with cosine
decay, weight decay 5e-4, batch 128, 200 epochs, pad-4 random crop + flip at 32 px.

Prepare the data once (network + tensorflow-cpu, see README):
  pip install tensorflow-cpu && tfds build cifar10 --file_format=array_record
Run:
  python -m kdjax.main --config=configs/resnet18_cifar.py --workdir=runs/r18_cifar
Expected: ~95% test accuracy (the usual figure for this recipe; not yet measured by us: no
CIFAR-10 can be downloaded on our machines). About 0.5 h on one A100-class GPU.

`:runlocal` shrinks it to a few steps with a small batch, for a CPU smoke test:
  python -m kdjax.main --config=configs/resnet18_cifar.py:runlocal --workdir=/tmp/r18
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False)
  c = configlib.base()
  c.data.name = "cifar10"
  c.total_epochs = 200.0
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c
