"""experiments/cifar100_grid.py: the dry run lists every cell of the mdistiller-format table with
a command that kdjax.main parses and validates, and `collect` puts the published number beside
ours."""

import io
import json
import os
import shlex
import sys

import pytest
from conftest import REPO
from test_experiments import _finished_run

sys.path.insert(0, os.path.join(REPO, "experiments"))

import cifar100_grid  # noqa: E402
import paper_a  # noqa: E402

from kdjax import configlib, errors, validate  # noqa: E402


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


def test_dry_run_lists_every_cell_with_a_valid_config(tmp_path):
  root = str(tmp_path / "c100")
  out = io.StringIO()
  assert cifar100_grid.main(["run", f"--root={root}", "--dry_run"], out=out) == 0
  commands = [shlex.split(line)[3:] for line in out.getvalue().splitlines()
              if line.startswith("python -m kdjax.main ")]
  # 5 teachers + 3 seeds x (6 students from scratch + 6 pairs x 8 methods)
  assert len(commands) == 5 + 3 * (6 + 6 * 8)
  configs = {}
  for args in commands:
    workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
    configs[os.path.basename(workdir)] = c = paper_a.load_config(args)
    validate.check(c)
  c = configs["dkd_resnet32x4_resnet8x4_s2"]
  assert (c.model.name, c.seed, c.data.name, c.batch_size) == ("resnet8x4", 2, "cifar100", 64)
  assert c.teacher.models == os.path.join(root, "teacher_resnet32x4")
  assert (c.loss.dkd_weight, c.loss.dkd_beta, c.loss.warmup_epochs.dkd) == (1.0, 8.0, 20.0)
  assert configs["dkd_resnet56_resnet20_s0"].loss.dkd_beta == 2.0  # mdistiller's per-pair beta
  c = configs["kd_vgg13_vgg8_s0"]  # mdistiller's KD: CE 0.1 + KD 0.9, T 4
  assert (c.loss.ce_weight, c.loss.kd_weight, c.loss.kd_temperature) == (0.1, 0.9, 4.0)
  assert configs["kd_ls_vgg13_vgg8_s0"].loss.kd_temperature == 3.0
  # DKD+LS as its published log "dkd,resnet56,resnet20,3,18,2.0": T 3, alpha and beta x 18
  c = configs["dkd_ls_resnet56_resnet20_s1"]
  assert (c.loss.dkd_temperature, c.loss.dkd_weight, c.loss.dkd_alpha, c.loss.dkd_beta,
          c.loss.kd_standardize) == (3.0, 18.0, 1.0, 2.0, True)
  c = configs["dkd_ls_resnet32x4_resnet8x4_s0"]  # "dkd,resnet32x4,resnet8x4,2,9"
  assert (c.loss.dkd_temperature, c.loss.dkd_weight, c.loss.dkd_beta) == (2.0, 9.0, 8.0)
  c = configs["crd_wrn_40_2_wrn_16_2_s1"]
  assert (c.loss.crd_weight, c.loss.kd_weight, c.loss.crd_negatives) == (0.8, 0.0, 16384)
  c = configs["teacher_wrn_40_2"]
  assert (c.model.name, c.teacher.models, c.optimizer.schedule) == ("wrn_40_2", "", "multistep")
  assert c.optimizer.decay_epochs == (150.0, 180.0, 210.0) and c.total_epochs == 240.0


def test_config_arguments():
  get_config = configlib.load_file("configs/cifar100.py").get_config
  c = get_config("student=resnet20,teacher=,method=ce")
  validate.check(c)  # a student (or a teacher) from scratch: no teacher
  assert (c.model.name, c.teacher.models, c.loss.kd_weight) == ("resnet20", "", 0.0)
  with pytest.raises(errors.UserError, match="teacher_dir="):  # a run directory as teacher=
    get_config("student=resnet20,teacher=runs/t,method=kd")


def test_collect_puts_the_published_number_beside_ours(tmp_path):
  root = str(tmp_path / "c100")
  _finished_run(f"{root}/dkd_resnet32x4_resnet8x4_s0", 0.76)
  _finished_run(f"{root}/dkd_resnet32x4_resnet8x4_s1", 0.77)
  out = io.StringIO()
  assert cifar100_grid.main(["collect", f"--root={root}", "--pairs=resnet32x4:resnet8x4",
                             "--arms=ce,dkd,srrl", "--seeds=0,1"], out=out) == 0
  with open(f"{root}/results.json") as f:
    cells = {(c["teacher"], c["student"], c["arm"]): c for c in json.load(f)["cells"]}
  dkd = cells[("resnet32x4", "resnet8x4", "dkd")]
  assert dkd["ours"] == pytest.approx(76.5) and dkd["paper"] == 76.32
  assert "mdistiller" in dkd["paper_source"]
  assert cells[("resnet32x4", None, "ce")]["paper"] == 79.42  # the teacher's row
  assert cells[(None, "resnet8x4", "ce")]["paper"] == 72.50  # the student from scratch
  assert cells[("resnet32x4", "resnet8x4", "srrl")]["paper"] is None
