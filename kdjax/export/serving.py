"""The eval forward of any kdjax run as one function of stored images: what the StableHLO and
ONNX exports serialize and what `kdjax.predict` runs on a run directory.

`forward(variables, images)` takes a batch as the run's dataset stores it (`input_shape`: after
`data.load_size` / `data.load_resize`, before the eval view), uint8 in [0, 255] or float in
[0, 1], and applies the run's eval view (central crop of `data.eval_crop_fraction`, resize to
`data.image_size`, the run's normalisation: kdjax.data.augment.preprocess_eval, the very function
the run's evaluation used) and the network in eval mode, giving (logits, probabilities). The
network is the one `kdjax.hf.pretrained.load` reads from the run (a student from scratch, a
pre-trained student, an adapted teacher), at the run's `model.dtype`, with convolutions that
pick kdjax's CPU path or XLA's where the program runs (`models.portable_conv`).
`to_stored` brings a decoded image to `input_shape` as the run's data source would.
"""

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import errors
from kdjax.data import augment, sources
from kdjax.export import record as records
from kdjax.hf import pretrained

INPUT_RANGES = {"uint8": "[0, 255]", "float32": "[0, 1]"}  # the image dtypes a forward takes


@dataclasses.dataclass
class Servable:
  """A run's eval forward, its variables (host arrays) and what a caller needs to feed it."""

  workdir: Path
  run: dict
  teacher: pretrained.Teacher
  input_shape: tuple[int, int, int]  # H, W, C of a stored image
  class_names: list[str]

  @property
  def variables(self) -> Any:
    return self.teacher.variables

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def load(self) -> dict:
    """How a decoded image becomes a stored one (`to_stored`'s arguments)."""
    return load_settings(self.run["data"], self.input_shape)

  def forward(self, variables, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, H, W, C] stored images (uint8 0-255, or float 0-1) -> (logits, probabilities)."""
    x = images.astype(jnp.float32)
    if not jnp.issubdtype(images.dtype, jnp.integer):
      x = x * 255.0
    x = augment.preprocess_eval(x, ml_collections.ConfigDict(self.run["data"]))
    logits = self.teacher.apply(variables, x)["logits"].astype(jnp.float32)
    return logits, jax.nn.softmax(logits, axis=-1)


def load_settings(data: dict, input_shape) -> dict:
  return {"input_shape": list(input_shape), "load_size": data.get("load_size"),
          "load_resize": data.get("load_resize", "square"),
          "load_filter": data.get("load_filter", "bilinear"),
          "max_aspect": data.get("max_aspect", 2.0)}


def stored_shape(data: dict) -> tuple[int, int, int]:
  """(H, W, C) of the run's stored images: from `data.load_size`, else from its dataset."""
  size, how = data.get("load_size"), data.get("load_resize", "square")
  if size:
    if how == "shorter_full":
      return int(size), sources.canvas_width(int(size), float(data.get("max_aspect", 2.0))), 4
    return int(size), int(size), 3
  cfg = ml_collections.ConfigDict(data)
  try:
    source = sources.open_source(cfg, cfg.test_split or cfg.train_split)
    shape = source.read([0])[0].shape[1:]
  except Exception as e:  # noqa: BLE001  (any reason the dataset cannot be read)
    raise errors.UserError(
        f"the run stores {data['name']} images at their own size (data.load_size unset) and the "
        f"dataset cannot be read here to learn it ({type(e).__name__}: {e}); export on a machine "
        "with the dataset prepared") from e
  return tuple(int(d) for d in shape)


def load(workdir, conv_impl: str = "portable", dtype: str | None = None) -> Servable:
  """The servable of run `workdir` (its latest checkpoint), computing in `dtype` (None: the
  run's `model.dtype`)."""
  workdir = Path(workdir).resolve()
  run = records.read_run(workdir)
  records.latest_step(workdir)  # a clear error when nothing is saved yet
  teacher = pretrained.load(str(workdir), dtype=dtype or run["model"].get("dtype", "float32"),
                            conv_impl=conv_impl, on_host=True)
  shape = stored_shape(run["data"])
  out = jax.eval_shape(lambda v, x: teacher.apply(v, augment.preprocess_eval(
      x, ml_collections.ConfigDict(run["data"])))["logits"], teacher.variables,
      jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  num_classes = int(out.shape[-1])
  return Servable(workdir=workdir, run=run, teacher=teacher, input_shape=shape,
                  class_names=records.class_names(run, num_classes))


def to_stored(image: np.ndarray, load: dict) -> np.ndarray:
  """A decoded uint8 image [H, W] or [H, W, 1|3|4] -> the stored view `load` describes (as the
  run's data source stores its images)."""
  image = np.asarray(image)
  image = image[..., :3] if image.ndim == 3 else image
  h, w, c = load["input_shape"]
  size = load.get("load_size")
  if not size and image.shape[:2] != (h, w) and h == w:  # the dataset's own fixed size
    size = h
  image = sources.stored_image(image, int(size) if size else None, load["load_resize"],
                               float(load["max_aspect"]), load["load_filter"])
  if image.shape != (h, w, c):
    raise errors.UserError(f"an image became {image.shape}, the model takes {(h, w, c)}")
  return image
