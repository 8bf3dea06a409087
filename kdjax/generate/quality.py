"""How a classifier reads a synthetic dataset (class fidelity), and a grid image of its samples.

`fidelity(run, directory)`: a kdjax run (any classifier of the dataset's classes: an adapted
teacher, a student) classifies every image of a `kdjax.generate` output, stored as the run's
own data source stores images (kdjax.export.serving: the run's eval view and network); the
accuracy against the prompts' labels says how often a prompt of class c draws an image the
classifier takes for c. `grid(directory, path)`: the first images of every class, one row per
class, as a PNG.
"""

from pathlib import Path

import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from kdjax.export import serving


def read(directory) -> tuple[np.ndarray, np.ndarray, list]:
  """(uint8 images [N, S, S, 3], int32 labels [N], class names) of a synthetic dataset, in
  plan order (its `index` feature)."""
  builder = tfds.builder_from_directory(str(directory))
  records = builder.as_data_source(split="train")
  examples = sorted((records[i] for i in range(len(records))), key=lambda e: int(e["index"]))
  images = np.stack([np.asarray(e["image"]) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  return images, labels, list(builder.info.features["label"].names)


def classify(run, images: np.ndarray, batch: int = 500) -> np.ndarray:
  """float32 [N, classes] probabilities of run `run` (a directory) on stored images."""
  servable = serving.load(run)
  forward = jax.jit(servable.forward)
  stored = np.stack([serving.to_stored(im, servable.load) for im in images])
  return np.concatenate([np.asarray(forward(servable.variables, stored[i:i + batch])[1])
                         for i in range(0, len(stored), batch)])


def fidelity(run, directory) -> dict:
  """Accuracy of run `run` on synthetic dataset `directory` against its prompts' labels:
  overall, per class, the confusion matrix (rows: prompt class, columns: predicted) and the
  mean probability given to the prompt's class."""
  images, labels, names = read(directory)
  probs = classify(run, images)
  predicted = probs.argmax(-1)
  classes = len(names)
  confusion = np.zeros((classes, classes), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
  return {"classifier": str(run), "images": int(len(labels)),
          "accuracy": float((predicted == labels).mean()),
          "per_class": {n: float(a) for n, a in zip(names, per_class)},
          "prompt_class_probability": float(probs[np.arange(len(labels)), labels].mean()),
          "confusion": confusion.tolist()}


def grid(directory, path, per_class: int = 10, scale: int = 4, real=None) -> Path:
  """PNG of the first `per_class` images of every class (rows), each upscaled `scale`x
  (nearest); `real`: optional (images, labels) of real data, shown as one more column block
  on the right after a gap, for comparison."""
  images, labels, names = read(directory)
  rows = []
  for c in range(len(names)):
    row = list(images[labels == c][:per_class])
    row += [np.full_like(images[0], 255)] * (per_class - len(row))
    if real is not None:
      r_images, r_labels = real
      r_row = list(r_images[r_labels == c][:per_class])
      row += [np.full_like(images[0], 128)] + r_row + [np.full_like(images[0], 255)] * (
          per_class - len(r_row))
    rows.append(np.concatenate(row, axis=1))
  picture = np.concatenate(rows, axis=0)
  picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
  out = Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(picture).save(out)
  return out
