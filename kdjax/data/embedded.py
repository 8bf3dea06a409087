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

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NAME = "kdjax_digits"


def _png(image: np.ndarray) -> io.BytesIO:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  buf.seek(0)
  return buf


class KdjaxDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits (UCI optdigits test set) as a TFDS dataset."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "8x8 grey-scale digits from scikit-learn; 1437 train / 360 test."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="scikit-learn load_digits(): real 8x8 handwritten digits, 10 classes.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is on disk already, inside scikit-learn.
    return {"train": self._generate_examples(is_test=False),
            "test": self._generate_examples(is_test=True)}

  def _generate_examples(self, is_test: bool):
    from sklearn.datasets import load_digits  # Imported here: only this builder needs sklearn.

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, digits.target)):
      if (i % 5 == 0) == is_test:
        yield i, {"image": _png(image), "label": int(label)}
