"""Mixup of the training batch (kdjax/data/augment.py `mixup`, kdjax/data/pipeline.py) against
NumPy: big_vision's draw (one Beta(alpha, alpha) ratio per batch, max(a, 1 - a), the batch rolled
by one), both input paths, the same batch on 1 and 8 devices; the train step's mixed
cross-entropy (kdjax/steps.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_python, tiny_config

from kdjax import configlib, errors, runtime, steps, validate
from kdjax import sharding as shd
from kdjax.data import augment, pipeline


def test_mixup_mixes_each_example_with_the_next_by_one_ratio():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4, 4, 3)).astype(np.float32)
  labels = np.arange(64, dtype=np.int32)
  key = jax.random.key(3)
  images, label_mix, w = jax.device_get(augment.mixup(jnp.asarray(x), jnp.asarray(labels), key,
                                                      alpha=1.0, prob=0.5))
  # the drawn ratio and rows, as big_vision draws the ratio (utils.py get_mixup)
  k_ratio, k_which = jax.random.split(key)
  a = float(jax.random.beta(k_ratio, 1.0, 1.0))
  lam = max(a, 1.0 - a)
  rows = np.asarray(jax.random.bernoulli(k_which, 0.5, (64,)))
  assert 0 < rows.sum() < 64 and 0.5 <= lam < 1
  np.testing.assert_allclose(w, np.where(rows, lam, 1.0), rtol=1e-6)
  assert w.dtype == np.float32 and label_mix.dtype == np.int32
  partner = np.roll(x, 1, axis=0)
  want = w[:, None, None, None] * x + (1 - w[:, None, None, None]) * partner
  np.testing.assert_allclose(images, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(label_mix, np.roll(labels, 1))
  off = jax.device_get(augment.mixup(jnp.asarray(x), jnp.asarray(labels), key, alpha=1.0,
                                     prob=0.0))
  np.testing.assert_array_equal(off[0], x)
  assert np.all(np.asarray(off[2]) == 1.0)


def test_mixup_ratio_weighs_the_own_image_at_least_half():
  """max(a, 1 - a) of a ~ Beta(alpha, alpha): in [0.5, 1], for a small and a large alpha."""
  for alpha in (0.2, 1.0, 5.0):
    lams = [float(augment.mixup(jnp.zeros((2, 1)), jnp.zeros(2, jnp.int32),
                                jax.random.key(s), alpha)[2][0]) for s in range(30)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0 and len(set(lams)) > 20, (alpha, lams)


def test_mixed_cross_entropy_weights_both_labels():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)), jnp.float32)
  batch = {"label": jnp.asarray([0, 1, 2, 3]), "label_mix": jnp.asarray([3, -1, 1, 2]),
           "mix_weight": jnp.asarray([0.25, 0.5, 1.0, 0.7])}
  ce = np.asarray(steps.train_cross_entropy(logits, batch, 5))
  log_p = np.asarray(jax.nn.log_softmax(logits))
  want = [-(0.25 * log_p[0, 0] + 0.75 * log_p[0, 3]),
          -log_p[1, 1],  # an unlabelled partner counts as the example's own label
          -log_p[2, 2], -(0.7 * log_p[3, 3] + 0.3 * log_p[3, 2])]
  np.testing.assert_allclose(ce, want, rtol=1e-5)


@pytest.mark.parametrize("in_memory", [True, False])
def test_train_input_mixes_only_when_asked(tfds_dir, in_memory):
  """Both input paths: mixup off leaves the batch as it was; on, the step's augmented batch is
  mixed with the drawn ratio and the batch rolled by one."""
  cfg = tiny_config(tfds_dir).data
  cfg.in_memory = in_memory
  mesh = shd.make_mesh()
  data = pipeline.build(cfg, mesh, 0, 16, 32)
  plain = data.train.batch(0, jax.random.key(0))
  assert set(plain) == {"image", "label", "index"}
  cfg.augment.mixup_alpha, cfg.augment.mixup_prob = 1.0, 0.0
  unmixed = pipeline.build(cfg, mesh, 0, 16, 32).train.batch(0, jax.random.key(0))
  np.testing.assert_array_equal(unmixed["image"], plain["image"])
  assert np.all(np.asarray(unmixed["mix_weight"]) == 1.0)
  cfg.augment.mixup_prob = 1.0
  mixed = pipeline.build(cfg, mesh, 0, 16, 32).train.batch(0, jax.random.key(0))
  w = np.asarray(mixed["mix_weight"])
  assert np.all(w == w[0]) and 0.5 <= w[0] < 1  # one ratio per batch, every row mixed
  w = w[:, None, None, None]
  x = np.asarray(plain["image"])
  np.testing.assert_allclose(mixed["image"], w * x + (1 - w) * np.roll(x, 1, 0), atol=1e-5)
  np.testing.assert_array_equal(mixed["label"], plain["label"])
  np.testing.assert_array_equal(mixed["label_mix"], np.roll(np.asarray(plain["label"]), 1))


_SHARDED_BATCHES = """
import os, sys
import jax, numpy as np
from kdjax import configlib, sharding
from kdjax.data import pipeline
c = configlib.load_file(os.path.join("configs", "demo.py")).get_config("runlocal,arm=teacher")
d = c.data
d.data_dir, d.load_size, d.image_size = sys.argv[1], 8, 8
d.augment.mixup_alpha, d.augment.mixup_prob = 1.0, 0.5
mesh = sharding.make_mesh()
out = {"devices": np.asarray(mesh.devices.size)}
for in_memory in (True, False):
  d.in_memory = in_memory
  train = pipeline.build(d, mesh, 0, 16, 32).train
  for step in (0, 1):
    b = jax.device_get(train.batch(step, jax.random.fold_in(jax.random.key(7), step)))
    for k, v in b.items():
      out[f"{in_memory}/{step}/{k}"] = np.asarray(v)
np.savez(sys.argv[2], **out)
"""


def test_mixed_batch_is_the_same_on_one_and_eight_devices(tfds_dir, tmp_path):
  """The global batch of a step, mixed, from both input paths, on 1 device and split over 8
  (each in its own process, as XLA fixes the device count at start-up)."""
  pipeline.build(tiny_config(tfds_dir).data, shd.make_mesh(), 0, 16, 32)  # the dataset, once
  got = []
  for n in (1, 8):
    env = {"XLA_FLAGS": runtime.with_cpu_flags(f"--xla_force_host_platform_device_count={n}")}
    path = os.path.join(tmp_path, f"{n}.npz")
    proc = run_python(["-c", _SHARDED_BATCHES, tfds_dir, path], env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got.append(dict(np.load(path)))
  one, eight = got
  assert int(one.pop("devices")) == 1 and int(eight.pop("devices")) == 8
  assert set(one) == set(eight) and "True/0/mix_weight" in one
  for key in one:
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-6, atol=1e-6, err_msg=key)
  w = one["True/0/mix_weight"]
  assert np.any(w == 1.0) and np.any(w < 1.0)  # mixup_prob 0.5: both kinds of row


def test_mixup_settings_are_validated_and_a_cached_teacher_refused():
  c = configlib.load_file(os.path.join(REPO, "configs", "function_matching.py")).get_config("")
  validate.check(c)  # mixup with the teacher online
  c.teacher.mode = "cached"
  with pytest.raises(errors.UserError, match="unmixed views: use teacher.mode=online"):
    validate.check(c)
  c.teacher.mode = "online"
  for key, value in (("mixup_alpha", -1.0), ("mixup_prob", 1.5)):
    bad = c.copy_and_resolve_references()
    bad.data.augment[key] = value
    with pytest.raises(errors.UserError, match=f"data.augment.{key}"):
      validate.check(bad)
