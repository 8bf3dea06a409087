r"""The transfer miniature (kdjax/tools/transfer.py): pre-train on MNIST-5k (P), transfer to the UCI
digits (T), offline. Every run of the setting, one `stage` each:

  pretrain_resnet | pretrain_vit | pretrain_student   Hugging Face architectures trained on P
  probe_resnet | probe_vit                            a published teacher's linear probe on T
  scratch | finetune | distill | distill_unlabelled | kd | aft | aft_weak | aft_both | feature_kd

The pre-training stages read root/hf/NAME/config.json and the later ones root/published/NAME
(what `kdjax.export` makes of pretrain/NAME), so run the setting with

  python experiments/transfer.py --workdir=runs/transfer --out=experiments/results/transfer

(all stages in order, resumable) or, once root holds them, any single stage:

  python -m kdjax.main --config=configs/transfer.py:stage=distill,seed=0,root=runs/transfer \
      --workdir=runs/transfer/n5/s0/distill

Arguments: `stage`, `n_per_class` (T's labelled images per digit, 5 by default, re-drawn by
every `seed`), `seed`, `root`, `steps` (0: the stage's default), `beta` (AFT's weight; 0: 1),
`runlocal`. Results and their commands:
experiments/results/transfer/results.md.
"""

from kdjax.tools import transfer


def get_config(arg=None):
  return transfer.config_for(arg)
