"""Mixup of the training batch (kdjax/data/augment.py `mixup`, kdjax/data/pipeline.py) against
NumPy; the train step's mixed cross-entropy (kdjax/steps.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import tiny_config

from kdjax import sharding as shd
from kdjax import steps
from kdjax.data import augment, pipeline


def test_mixup_mixes_each_example_with_the_next_by_one_ratio():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 4, 4, 3)).astype(np.float32)
  labels = np.arange(6, dtype=np.int32)
  images, label_mix, w = jax.device_get(augment.mixup(jnp.asarray(x), jnp.asarray(labels),
                                                      jax.random.key(3), alpha=1.0, prob=0.5))
  w = np.asarray(w)
  lam = w[w != 1.0]
  assert lam.size and np.allclose(lam, lam[0]) and 0 < lam[0] < 1  # one ratio per batch
  partner = np.roll(x, 1, axis=0)
  want = w[:, None, None, None] * x + (1 - w[:, None, None, None]) * partner
  np.testing.assert_allclose(images, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(label_mix, np.roll(labels, 1))
  off = jax.device_get(augment.mixup(jnp.asarray(x), jnp.asarray(labels), jax.random.key(3),
                                     alpha=1.0, prob=0.0))
  np.testing.assert_array_equal(off[0], x)
  assert np.all(np.asarray(off[2]) == 1.0)


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


def test_train_input_mixes_only_when_asked(tfds_dir):
  cfg = tiny_config(tfds_dir).data
  mesh = shd.make_mesh()
  data = pipeline.build(cfg, mesh, 0, 16, 32)
  plain = data.train.batch(0, jax.random.key(0))
  assert "mix_weight" not in plain and "index" in plain
  cfg.augment.mixup_alpha = 1.0
  mixed = pipeline.build(cfg, mesh, 0, 16, 32).train.batch(0, jax.random.key(0))
  w = np.asarray(mixed["mix_weight"])[:, None, None, None]
  x = np.asarray(plain["image"])
  np.testing.assert_allclose(mixed["image"], w * x + (1 - w) * np.roll(x, 1, 0), atol=1e-5)
  np.testing.assert_array_equal(mixed["label_mix"], np.roll(np.asarray(plain["label"]), 1))
