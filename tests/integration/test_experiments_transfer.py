"""experiments/transfer.py --dry_run (a subprocess): every stage of the transfer miniature
(kdjax/tools/transfer.py) as a `python -m kdjax.main` command whose config parses, locked, and
validates; every student arm trains the same steps and batch on the same data."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import REPO
from ml_collections import config_flags

from kdjax import validate
from kdjax.tools import transfer


def _parse(args: list[str]):
  """The config kdjax.main would build from these arguments (locked, overrides applied)."""
  from absl import flags

  argv = ["kdjax.main", *args]
  fv = flags.FlagValues()  # main.py's declaration: overrides are found in sys_argv
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  fv(argv)
  return fv.config, fv.workdir


def test_dry_run_lists_every_stage_with_configs_that_validate(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  root = str(tmp_path / "t")
  out = subprocess.run([sys.executable, "experiments/transfer.py", f"--workdir={root}",
                        "--dry_run", "--sizes=5,20", "--seeds=2"], capture_output=True,
                       text=True, check=True, timeout=120).stdout
  mains = [shlex.split(line)[3:] for line in out.splitlines()
           if line.startswith("python -m kdjax.main ")]
  exports = [line for line in out.splitlines() if line.startswith("python -m kdjax.export ")]
  assert len(exports) == 4  # resnet, vit, student, student_p25: published once
  assert len(mains) == 4 + 2 * 2 * (3 + len(transfer.ARMS))  # pretrain + (adaptations + arms)
  configs = {}
  for args in mains:
    config, workdir = _parse(args)
    validate.check(config)
    rel = os.path.relpath(workdir, root)
    configs[rel] = config
  arms = {k: c for k, c in configs.items() if os.path.basename(k) in transfer.ARMS}
  assert {(c.total_steps, c.batch_size) for c in arms.values()} == {(transfer.ARM_STEPS, 32)}
  for key, c in arms.items():
    n, seed = int(key.split("/")[0][1:]), int(key.split("/")[1][1:])
    assert (c.data.name, c.data.train_split, c.data.test_split) == (
        "kdjax_digits", "train[:437]", "train[437:]+test")
    assert (c.data.n_per_class, c.data.subset_seed, c.seed) == (n, seed, seed)
  c = configs["n20/s1/distill"]
  assert c.teacher.models == os.path.join(root, "n20", "s1", "probe_resnet")
  assert c.model.hub_config == os.path.join(root, "hf", "student") and not c.model.pretrained
  assert c.loss.kd_weight == c.loss.align_weight == c.loss.unif_weight == 1.0
  c = configs["n5/s0/aft_both"]
  assert c.model.pretrained == os.path.join(root, "published", "student")
  assert c.teacher.models.split(",") == [os.path.join(root, "published", t)
                                         for t in ("resnet", "vit")]
  assert (c.teacher.mode, c.loss.aft_weight, c.optimizer.backbone_lr_scale) == ("cached", 1.0,
                                                                                0.1)
  assert configs["n5/s1/distill_unlabelled"].data.unlabelled_rest
  c = configs["n20/s0/distill_tuned"]
  assert c.teacher.models == os.path.join(root, "n20", "s0", "tune_resnet")
  c = configs["n20/s0/tune_resnet"]
  assert not c.model.freeze_backbone and c.model.pretrained.endswith("published/resnet")
  c = configs["n5/s0/probe_vit"]
  assert c.model.freeze_backbone and c.model.pretrained.endswith("published/vit")
  c = configs["pretrain/resnet"]
  assert (c.data.name, c.data.train_split, c.model.name) == ("kdjax_mnist5k", "train", "hub")
  c = configs["pretrain/student_p25"]
  assert c.data.train_split == "train[:25%]" and c.model.hub_config.endswith("hf/student")
  assert configs["n5/s1/aft_p25"].model.pretrained.endswith("published/student_p25")
  # a mistyped override fails the way kdjax.main fails (the config is locked)
  with pytest.raises((KeyError, AttributeError)):
    _parse(mains[0] + ["--config.data.dataa_dir=x"])
