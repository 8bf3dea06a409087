"""Every config in configs/ parses, has a launch docstring, and trains a couple of steps locally."""

import glob
import importlib.util
import os

import pytest
import tensorflow_datasets as tfds
from conftest import REPO

from kdjax import configlib, train

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_parse_arg_types_and_rejects_unknown_keys():
  arg = configlib.parse_arg("runlocal,width=0.5", runlocal=False, width=1.0)
  assert arg.runlocal is True and arg.width == 0.5
  with pytest.raises(ValueError, match="valid: \\['runlocal'\\]"):
    configlib.parse_arg("runlokal", runlocal=False)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_locally(path, tfds_dir, tmp_path, tiny_hub_resnet):
  module = _load(path)
  assert "python -m kdjax.main --config=configs/" in module.__doc__
  config = module.get_config("runlocal")
  config.data.data_dir = tfds_dir
  if config.model.pretrained:  # no Hub here: a tiny random checkpoint of the same kind
    config.model.pretrained = tiny_hub_resnet
  config.total_steps = 2
  config.checkpoint_every_steps = 2
  with tfds.testing.mock_data(num_examples=80):  # catalog datasets; local ones ignore the mock
    result = train.train_and_evaluate(config, str(tmp_path))
  assert result.metrics["test/count"] > 0
  assert 0.0 <= result.metrics["test/accuracy"] <= 1.0
  assert int(result.state.step) == 2
