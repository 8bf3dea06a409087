"""Learning-rate schedules (kdjax/optim.py) against their definitions, step by step."""

import numpy as np
import pytest

from kdjax import configlib, errors, optim, validate


def _cfg(**kw):
  c = configlib.base().optimizer
  c.learning_rate = 0.05
  for k, v in kw.items():
    c[k] = v
  return c


def test_multistep_is_mdistillers_step_decay():
  """lr 0.05, x0.1 at epochs 150, 180, 210 (mdistiller's CIFAR-100 recipe), 10 steps/epoch."""
  fn = optim.schedule(_cfg(schedule="multistep"), 2400, 10)
  want = {0: 0.05, 1499: 0.05, 1500: 0.005, 1799: 0.005, 1800: 5e-4, 2100: 5e-5, 2399: 5e-5}
  for step, lr in want.items():
    assert float(fn(step)) == pytest.approx(lr, rel=1e-6), step


def test_multistep_boundaries_count_from_the_start_with_a_warm_up():
  fn = optim.schedule(_cfg(schedule="multistep", warmup_steps=100, decay_epochs=(5.0,)), 300, 40)
  assert float(fn(50)) == pytest.approx(0.025)  # linear warm-up
  assert float(fn(199)) == pytest.approx(0.05) and float(fn(200)) == pytest.approx(0.005)


def test_multistep_epochs_on_the_same_step_compound():
  fn = optim.schedule(_cfg(schedule="multistep", decay_epochs=(2.0, 2.0, 3.0)), 50, 10)
  assert float(fn(19)) == pytest.approx(0.05) and float(fn(20)) == pytest.approx(5e-4)
  assert float(fn(30)) == pytest.approx(5e-5)


def test_cosine_and_constant_unchanged():
  cos = optim.schedule(_cfg(), 100, 10)
  assert float(cos(0)) == pytest.approx(0.05)
  assert float(cos(50)) == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * 0.5)), abs=1e-7)
  assert float(optim.schedule(_cfg(schedule="constant"), 100, 10)(99)) == pytest.approx(0.05)


def test_decay_epochs_are_validated():
  c = configlib.base()
  c.total_steps = 10
  c.optimizer.decay_epochs = (180.0, 150.0)
  with pytest.raises(errors.UserError, match="increasing"):
    validate.check(c)
