"""Data layer: TFDS sources (embedded and catalog via mock data), subsets, augmentation, eval."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config

from kdjax import errors, validate
from kdjax import sharding as shd
from kdjax.data import augment, pipeline, sources
from kdjax.evaluators import classification


def test_embedded_digits_are_real_and_read_through_tfds(tfds_dir):
  cfg = tiny_config(tfds_dir).data
  train, test = sources.open_source(cfg, "train"), sources.open_source(cfg, "test")
  assert (len(train), len(test), train.num_classes) == (1437, 360, 10)
  images, labels = test.read(range(len(test)))
  assert images.shape == (360, 8, 8, 3) and images.dtype == np.uint8
  assert np.bincount(labels, minlength=10).min() >= 20  # every digit present
  # Real scans, not noise: a nearest-class-mean classifier on train beats chance by far.
  tr_images, tr_labels = train.read(range(len(train)))
  means = np.stack([tr_images[tr_labels == c].mean(0) for c in range(10)]).reshape(10, -1)
  dists = ((images.reshape(360, 1, -1) - means[None]) ** 2).sum(-1)
  assert (dists.argmin(1) == labels).mean() > 0.8


def test_catalog_dataset_through_tfds_mock_data(tfds_dir):
  cfg = tiny_config(tfds_dir).data
  cfg.name, cfg.load_size = "cifar10", None
  with tfds.testing.mock_data(num_examples=21):
    src = sources.open_source(cfg, "train")
    images, labels = src.read([0, 5, 20])
  assert len(src) == 21 and src.num_classes == 10
  assert images.shape == (3, 32, 32, 3) and labels.dtype == np.int32


def test_unprepared_catalog_dataset_names_the_fix(tmp_path, tfds_dir):
  cfg = tiny_config(tfds_dir).data
  cfg.name, cfg.data_dir = "cifar10", str(tmp_path)
  with pytest.raises(errors.UserError, match="tfds build cifar10 --file_format=array_record"):
    sources.open_source(cfg, "train")


def _subset_cfg(**kw):
  base = dict(val_fraction=0.0, n_per_class=None, fraction=None)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_subsets_are_stratified_deterministic_and_disjoint():
  labels = np.repeat(np.arange(5), [50, 40, 30, 20, 10])
  train, val = sources.split_train_val(labels, _subset_cfg(val_fraction=0.1, n_per_class=8), 3)
  again, val_again = sources.split_train_val(labels, _subset_cfg(val_fraction=0.1,
                                                                 n_per_class=8), 3)
  other, _ = sources.split_train_val(labels, _subset_cfg(val_fraction=0.1, n_per_class=8), 4)
  assert np.array_equal(train, again) and np.array_equal(val, val_again)
  assert not np.array_equal(train, other)
  assert not set(train) & set(val)
  assert np.array_equal(np.bincount(labels[train]), [8] * 5)
  assert np.array_equal(np.bincount(labels[val]), [5, 4, 3, 2, 1])
  frac, _ = sources.split_train_val(labels, _subset_cfg(fraction=0.5), 0)
  assert np.array_equal(np.bincount(labels[frac]), [25, 20, 15, 10, 5])
  with pytest.raises(ValueError, match="only"):
    sources.split_train_val(labels, _subset_cfg(n_per_class=11), 0)


def test_epochs_visit_every_example_once_and_batches_depend_only_on_step(tfds_dir):
  cfg = tiny_config(tfds_dir)
  mesh = shd.make_mesh()
  src = sources.open_source(cfg.data, "train")
  rows = np.arange(100)
  a = pipeline.TrainInput(src, rows, cfg.data, mesh, 16, seed=7)
  b = pipeline.TrainInput(src, rows, cfg.data, mesh, 16, seed=7)
  assert a.steps_per_epoch == 6  # 100 // 16, the ragged rest is dropped
  epoch0 = np.concatenate([a.indices(s) for s in range(6)])
  assert len(set(epoch0)) == 96
  assert np.array_equal(a.indices(13), b.indices(13))  # epoch 2, batch 1, from a fresh input
  assert not np.array_equal(a.indices(1), a.indices(7))  # a new permutation each epoch
  key = jax.random.key(0)
  x1, x2 = a.batch(13, key), b.batch(13, key)
  assert np.array_equal(np.asarray(x1["image"]), np.asarray(x2["image"]))
  labels = src.read(rows[a.indices(13)])[1]
  assert np.array_equal(np.asarray(x1["label"]), labels)


def test_streaming_and_in_memory_give_identical_batches(tfds_dir):
  cfg = tiny_config(tfds_dir)
  mesh = shd.make_mesh()
  src = sources.open_source(cfg.data, "train")
  rows = np.arange(0, 1437, 3)
  mem = pipeline.TrainInput(src, rows, cfg.data, mesh, 16, seed=1)
  cfg.data.in_memory = False
  stream_src = sources.open_source(cfg.data, "train")  # decodes records per batch, no cache
  assert not stream_src.keep_in_memory
  stream = pipeline.TrainInput(stream_src, rows, cfg.data, mesh, 16, seed=1)
  for step in (0, 5, 40):
    key = jax.random.key(step)
    m, s = mem.batch(step, key), stream.batch(step, key)
    np.testing.assert_array_equal(np.asarray(m["label"]), np.asarray(s["label"]))
    np.testing.assert_allclose(np.asarray(m["image"]), np.asarray(s["image"]), atol=1e-6)


def test_crop_flip_matches_a_numpy_reference():
  cfg = ml_collections.ConfigDict(dict(
      image_size=6, mean=(0.0,) * 3, std=(1.0,) * 3,
      augment=dict(kind="crop_flip", pad=2, flip=True, scale=(0.08, 1), ratio=(0.75, 1.33))))
  images = np.random.default_rng(0).integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
  out = np.asarray(augment.augment(jnp.asarray(images), jax.random.key(3), cfg)) * 255.0
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))).astype(np.float32)
  flips = 0
  for i in range(64):  # each output must be some 6x6 window of the padded image, maybe flipped
    windows = [padded[i, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
    plain = min(np.abs(out[i] - w).max() for w in windows)
    mirrored = min(np.abs(out[i][:, ::-1] - w).max() for w in windows)
    assert min(plain, mirrored) < 1e-3
    flips += mirrored < plain
  assert 16 < flips < 48  # p = 0.5


def test_random_resized_crop_shapes_and_identity_at_full_scale():
  cfg = ml_collections.ConfigDict(dict(
      image_size=16, mean=(0.0,) * 3, std=(1.0,) * 3,
      augment=dict(kind="rrc_flip", pad=0, flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))))
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  out = np.asarray(augment.augment(jnp.asarray(images), jax.random.key(0), cfg)) * 255.0
  np.testing.assert_allclose(out, images, atol=1e-3)  # area 1, ratio 1: the whole image
  cfg.augment.scale, cfg.image_size = (0.1, 0.5), 8
  out = augment.augment(jnp.asarray(images), jax.random.key(0), cfg)
  assert out.shape == (4, 8, 8, 3) and bool(jnp.all(jnp.isfinite(out)))


def test_eval_counts_every_example_once_with_a_ragged_last_batch(tfds_dir):
  cfg = tiny_config(tfds_dir)
  mesh = shd.make_mesh()
  src = sources.open_source(cfg.data, "test")
  rows = np.arange(37)  # 2 full batches of 16 and one of 5 (+11 padding)
  ev = pipeline.EvalInput(src, rows, cfg.data, mesh, 16)
  assert ev.num_batches == 3
  projection = jax.random.normal(jax.random.key(0), (8 * 8 * 3, 10))

  def predict(variables, images):  # a fixed "model": logits from a random projection
    return images.reshape(images.shape[0], -1) @ variables

  from kdjax import steps
  eval_step = jax.jit(steps.make_eval_step(predict, 10))
  got = classification.evaluate(eval_step, projection, ev)
  images, labels = src.read(rows)
  x = np.asarray(augment.preprocess_eval(jnp.asarray(images), cfg.data))
  logits = x.reshape(37, -1) @ np.asarray(projection)
  assert got["count"] == 37
  assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-7)
  shifted = logits - logits.max(1, keepdims=True)
  logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  assert got["loss"] == pytest.approx(-np.mean(logp[np.arange(37), labels]), rel=1e-4)


def test_unlabelled_rest_adds_the_left_out_train_images_without_labels(tfds_dir):
  """data.unlabelled_rest: after the labelled selection come exactly the train images it left
  out, label -1, never a validation image; a run with no distillation term is refused."""
  cfg = tiny_config(tfds_dir, **{"data.val_fraction": 0.1, "data.n_per_class": 5,
                                 "data.unlabelled_rest": True})
  data = pipeline.build(cfg.data, shd.make_mesh(), 0, 16, 32)
  src = data.train.source.parts[1]  # the real train split (already decoded, in memory)
  labels = src.labels()
  chosen, val = sources.split_train_val(labels, cfg.data, cfg.data.subset_seed)
  rows, n = data.train.rows, len(chosen)
  assert n == 50 and len(rows) == len(src) - len(val) == len(src) - data.evals["val"].num_examples
  np.testing.assert_array_equal(rows[:n], chosen)
  rest = rows[n:] - len(src)  # rows of the second (unlabelled) part -> rows of the split
  assert not set(rest) & set(val) and not set(rest) & set(chosen)
  assert set(rest) | set(chosen) | set(val) == set(range(len(src)))
  images, got = data.train.source.read(rows)
  np.testing.assert_array_equal(got[:n], labels[chosen])
  assert (got[n:] == -1).all()
  np.testing.assert_array_equal(images[n:], src.read(rest)[0])

  from kdjax.train import trainer
  with pytest.raises(ValueError, match="unlabelled_rest=True adds unlabelled images"):
    trainer.train_and_evaluate(cfg, "/nonexistent/never-written")  # CE only: refused first
  cfg.loss.kd_weight = 1.0
  assert validate.partial_labels(cfg) is True
  cfg.data.n_per_class = None
  with pytest.raises(ValueError, match="set data.n_per_class or data.fraction"):
    pipeline.build(cfg.data, shd.make_mesh(), 0, 16, 32)
