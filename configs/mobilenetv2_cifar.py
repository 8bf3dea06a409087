r"""MobileNetV2 1.0 (CIFAR strides) trained from scratch with cross-entropy on TFDS cifar10.

Paper A's second student, scratch baseline. SGD + Nesterov, lr 0.05 cosine, weight decay 4e-5
(the MobileNetV2 recipe), batch 128, 200 epochs, pad-4 crop + flip at 32 px.

  python -m kdjax.main --config=configs/mobilenetv2_cifar.py --workdir=runs/mnv2_cifar
  python -m kdjax.main --config=configs/mobilenetv2_cifar.py:runlocal --workdir=/tmp/mnv2
Expected: ~93-94% on CIFAR-10 (commonly reported; not yet measured by us).
`width=0.5` in the argument halves the width: `--config=configs/mobilenetv2_cifar.py:width=0.5`.
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False, width=1.0)
  c = configlib.base()
  c.model.name = "mobilenet_v2"
  c.model.width_multiplier = arg.width
  c.optimizer.learning_rate = 0.05
  c.optimizer.weight_decay = 4e-5
  c.total_epochs = 200.0
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c
