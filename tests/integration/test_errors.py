"""Bad input, through the real command line: one line naming the fix, exit status 2, no
traceback, and nothing written over (issue 7).

Each bad command runs against the workdir of a finished tiny run (its checkpoint, metrics and
config) and the data directory it read; every file of both is compared before and after
(size, mtime, sha1). Each refusal comes before compiling anything, so a case costs one process
start.
"""

import glob
import importlib.util
import os

import numpy as np
import pytest
from conftest import REPO, run_python, set_key, snapshot, tiny_cli_args
from PIL import Image

from kdjax import configlib, errors, validate
from kdjax.train import adapt


@pytest.fixture(scope="module")
def finished_run(tfds_dir, tmp_path_factory):
  """A workdir holding a finished tiny CLI run (conftest.tiny_cli_args) and its checkpoints."""
  workdir = str(tmp_path_factory.mktemp("finished_run"))
  proc = run_python(tiny_cli_args(tfds_dir, workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]
  return workdir


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
  """Hub settings of a machine without network whose HF cache is empty."""
  return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path_factory.mktemp("empty_hf_home"))}


def _refused(args, roots, env=None) -> str:
  """Runs `python args`, checks the refusal (exit 2, one line, no traceback, `roots`
  untouched) and returns that line."""
  before = snapshot(*roots)
  proc = run_python(args, env_extra=env)
  assert proc.returncode == errors.EXIT_USER_ERROR, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith(("error: ", "config error: ")), proc.stderr[-3000:]
  assert snapshot(*roots) == before
  return line


def _train(finished_run, tfds_dir, *overrides, env=None) -> str:
  return _refused(tiny_cli_args(tfds_dir, finished_run, *overrides), [finished_run, tfds_dir],
                  env)


def test_mistyped_config_key(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.optimizer.learnin_rate=0.1")
  assert "no such key --config.optimizer.learnin_rate" in line
  assert "did you mean ['optimizer.learning_rate'" in line


def test_wrong_value_type(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.batch_size=abc")
  assert "--config.batch_size=abc" in line and "pass an int" in line


def test_unknown_student(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.model.name=resnet81")
  assert "unknown model.name 'resnet81'" in line
  assert "'mobilenet_v2', 'resnet110'" in line and "'resnet18', 'resnet20'" in line


def test_unknown_loss_setting(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.loss.aft_kernel=rbff")
  assert line == "error: unknown loss.aft_kernel 'rbff'; valid: ['linear', 'none', 'rbf']"


def test_a_mean_that_is_not_three_numbers(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.data.mean=0.5")
  assert "data.mean=(0.5,): must be 3 numbers" in line and '"(0.5,0.5,0.5)"' in line


def test_unknown_dataset(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.data.name=cifar1O")
  assert "unknown dataset data.name='cifar1O'" in line
  assert "['kdjax_digits', 'kdjax_mnist5k']" in line  # what the data dir holds (+ embedded)
  assert "'cifar10', 'cifar100'" in line  # the closest catalog names
  assert "tfds build NAME --file_format=array_record" in line
  assert "python -m kdjax.data.folder" in line


def test_unknown_teacher_offline(finished_run, tfds_dir, offline_hub):
  line = _train(finished_run, tfds_dir, "--config.loss.kd_weight=1",
                "--config.teacher.models=kdjax-test/no-such-teacher", env=offline_hub)
  assert "teacher 'kdjax-test/no-such-teacher' is not in the HF cache" in line
  assert "HF_HUB_OFFLINE=1" in line and "hf download kdjax-test/no-such-teacher" in line


@pytest.fixture(scope="module")
def pickle_teacher(tiny_hub_resnet, tmp_path_factory):
  """A checkpoint directory as torch's pickle format writes it: config.json +
  pytorch_model.bin, no safetensors."""
  import transformers

  path = tmp_path_factory.mktemp("pickle_teacher")
  model = transformers.ResNetForImageClassification.from_pretrained(tiny_hub_resnet)
  model.save_pretrained(path, safe_serialization=False)
  assert sorted(os.listdir(path)) == ["config.json", "pytorch_model.bin"]
  return str(path)


def test_pickle_checkpoint(finished_run, tfds_dir, pickle_teacher, offline_hub):
  line = _train(finished_run, tfds_dir, "--config.loss.kd_weight=1",
                f"--config.teacher.models={pickle_teacher}", env=offline_hub)
  assert "refusing to load the pickle checkpoint" in line and "pytorch_model.bin" in line
  assert "safe_serialization=True" in line  # the conversion command


def test_teacher_head_of_other_classes(finished_run, tfds_dir, tiny_hub_resnet, offline_hub):
  line = _train(finished_run, tfds_dir, "--config.loss.kd_weight=1",
                f"--config.teacher.models={tiny_hub_resnet}", env=offline_hub)
  assert "loss.kd_weight needs teacher heads with the task's 10 classes" in line
  assert "(5 classes)" in line
  assert "configs/adapt.py" in line and "loss.kd_weight=0" in line


def _image_folder(root, bad: bool):
  rng = np.random.default_rng(0)
  for split, classes in (("train", ("cat", "dog")), ("test", ("cat",))):
    for label in classes:
      os.makedirs(os.path.join(root, split, label))
      for i, mode in enumerate(("RGB", "L", "P", "RGBA")):
        Image.fromarray(rng.integers(0, 255, (6, 5, 3), np.uint8)).convert(mode).save(
            os.path.join(root, split, label, f"{i}.png"))
  if bad:
    with open(os.path.join(root, "train", "dog", "scan.jpg"), "wb") as f:
      f.write(b"\xff\xd8 not a jpeg")


def test_undecodable_image_in_a_folder_dataset(tmp_path):
  from kdjax.data import folder, sources

  data_dir = str(tmp_path / "tfds")
  _image_folder(tmp_path / "good", bad=False)
  folder.prepare(str(tmp_path / "good"), data_dir, "pets_mini")  # the previous preparation
  _image_folder(tmp_path / "bad", bad=True)
  command = ["-m", "kdjax.data.folder", f"--src={tmp_path / 'bad'}", "--name=pets_mini"]
  # A replacement is refused before anything of the old dataset is touched ...
  line = _refused([*command, f"--data_dir={data_dir}", "--overwrite"], [data_dir])
  assert f"1 of 13 images cannot be decoded: {tmp_path / 'bad' / 'train' / 'dog' / 'scan.jpg'}" \
      in line and "Delete or replace them, then run again" in line
  cfg = configlib.base().data
  cfg.name, cfg.data_dir = "pets_mini", data_dir
  assert len(sources.open_source(cfg, "train")) == 8  # still the previous one, readable
  # ... and a new data dir is not even created.
  _refused([*command, f"--data_dir={tmp_path / 'new'}"], [data_dir])
  assert not os.path.exists(tmp_path / "new")


def test_every_config_file_passes_validation():
  """validate() refuses only bad input: every shipped config (and its runlocal form) passes, as
  kdjax.main runs it (a teacher adapted first: the distillation from WORKDIR/teacher)."""
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in (None, "runlocal"):
      config = module.get_config(arg) if arg else module.get_config()
      if validate.adapting(config):
        config = adapt.distillation_config(config, "WORKDIR/teacher")
      validate.check(config)


def test_adapt_key_of_a_config_that_adapts_nothing(finished_run, tfds_dir):
  line = _train(finished_run, tfds_dir, "--config.teacher.adapt.total_epochs=1")
  assert "no such key --config.teacher.adapt.total_epochs" in line


@pytest.mark.parametrize("key,value,message", [
    ("model.dtype", "float16", "unknown model.dtype 'float16'; valid: ['bfloat16', 'float32']"),
    ("optimizer.name", "adamx", "unknown optimizer.name 'adamx'; valid: ['adam', 'adamw', 'sgd']"),
    ("teacher.mode", "offline", "unknown teacher.mode 'offline'; valid: ['cached', 'online']"),
    ("data.augment.kind", "rrc", "unknown data.augment.kind 'rrc'; valid: ['crop_flip', 'none'"),
    ("loss.kd_weight", -1.0, "loss.kd_weight=-1.0: a loss weight must be >= 0"),
    ("loss.align_weight", 1.0, "loss terms ['align'] need teachers: set teacher.models"),
    ("batch_size", 0, "batch_size=0: must be > 0"),
    ("data.val_fraction", 1.0, "data.val_fraction=1.0: must be in [0, 1)"),
    ("data.std", (0.5, 0.0, 0.5), "data.std=(0.5, 0.0, 0.5): every value must be > 0"),
    ("model.freeze_backbone", True, "model.freeze_backbone=True needs model.pretrained"),
])
def test_validate_names_the_key_and_the_valid_values(key, value, message):
  config = configlib.base()
  config.total_steps = 2
  set_key(config, key, value)
  with pytest.raises(errors.UserError) as info:
    validate.check(config)
  assert str(info.value).startswith(message), str(info.value)
