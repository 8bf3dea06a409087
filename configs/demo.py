r"""The offline demo: ResNet-18 from scratch on real handwritten digits that ship with scikit-learn.

No network is needed: `kdjax_digits` (see kdjax/data/embedded.py) is prepared from the 1,797
UCI digits inside scikit-learn as a local TFDS array_record dataset on first use. 1,437 train
(10% held out for validation) / 360 test images, 8x8 grey-scale upsampled to 16 px. No flip:
digits are not mirror-symmetric. This is the cross-entropy "from scratch" baseline; the demo
becomes a distillation run when teachers and losses land.

  python -m kdjax.main --config=configs/demo.py --workdir=/tmp/kdjax_demo
"""

from kdjax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, runlocal=False)
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
  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_epochs = 15.0
  c.eval_every_steps = 100
  c.log_every_steps = 20
  c.checkpoint_every_steps = 100
  c.optimizer.learning_rate = 0.05
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c
