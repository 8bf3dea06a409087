"""A checkpoint's preprocessing (preprocessor_config.json: resize, crop, rescale, mean/std) in
JAX, as the Hugging Face image processors apply it."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from kdjax import image_ops
from kdjax.hf.hub import read_config, resolve


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What the checkpoint's preprocessor_config.json asks for, applied in JAX."""

  resize: tuple[str, Any] | None = ("square", (224, 224))  # (square, (h, w)) | (shortest_edge, s)
  crop: tuple[int, int] | None = None
  central_fraction: float = 1.0  # first keep this central fraction (a kdjax eval view)
  resample: str = "linear"  # jax.image.resize method
  rescale: float = 1 / 255
  mean: tuple[float, ...] = (0.485, 0.456, 0.406)
  std: tuple[float, ...] = (0.229, 0.224, 0.225)

  @property
  def output_size(self) -> tuple[int, int] | None:
    if self.crop is not None:
      return self.crop
    if self.resize is not None and self.resize[0] == "square":
      return tuple(self.resize[1])
    return None

  def __call__(self, images: jax.Array) -> jax.Array:
    """uint8 (or 0-255 float) [B, H, W, 3] -> normalised float32 at the model's input size."""
    x = jnp.asarray(images, jnp.float32)
    _, h, w, c = x.shape
    x = image_ops.central_crop(x, self.central_fraction)  # as the data pipeline's eval view
    h, w = x.shape[1:3]
    if self.resize is not None:
      kind, size = self.resize
      if kind == "square":
        nh, nw = size
      else:  # shortest edge -> size, aspect kept (HF get_resize_output_image_size)
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        nh, nw = (size, new_long) if h <= w else (new_long, size)
      if (nh, nw) != (h, w):
        x = jax.image.resize(x, (x.shape[0], nh, nw, c), self.resample, antialias=True)
        x = jnp.clip(jnp.round(x), 0, 255)  # HF resizes uint8 images through PIL
      h, w = nh, nw
    if self.crop is not None:
      ch, cw = self.crop
      top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
      x = x[:, top:top + ch, left:left + cw]
    x = x * self.rescale
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)


_RESAMPLE = {0: "nearest", 1: "lanczos3", 2: "linear", 3: "cubic", 4: "linear", 5: "cubic"}
_SQUARE_BY_DEFAULT = ("ViT", "DeiT", "BeitImage", "Dinov2ImageProcessor")  # int size -> square


def _size(value, processor_type: str):
  if value is None:
    return None
  if isinstance(value, int):
    square = processor_type.startswith(_SQUARE_BY_DEFAULT)
    return ("square", (value, value)) if square else ("shortest_edge", value)
  if "shortest_edge" in value:
    return ("shortest_edge", int(value["shortest_edge"]))
  return ("square", (int(value["height"]), int(value["width"])))


def config_image_size(config: dict) -> int:
  """The input size in config.json (CLIPModel: its vision_config); CNN configs have none: 224."""
  return int(config.get("vision_config", config).get("image_size", 224))


def preprocessing_from(directory: Path, config: dict) -> Preprocessing:
  path = directory / "preprocessor_config.json"
  default_size = config_image_size(config)
  if not path.is_file():  # no processor file: square resize to the model's size, ImageNet stats
    return Preprocessing(resize=("square", (default_size,) * 2))
  pp = json.loads(path.read_text())
  kind = pp.get("image_processor_type") or pp.get("feature_extractor_type") or ""
  resize = _size(pp.get("size", default_size), kind) if pp.get("do_resize", True) else None
  crop = None
  if kind.startswith("ConvNext") and resize is not None and resize[0] == "shortest_edge":
    # ConvNext processors (microsoft/resnet-*): below 384 px resize the short side to
    # size / crop_pct (default 224 / 256), crop size x size; from 384 px warp to a square.
    # Other processors ignore a crop_pct key (some Hub configs carry a stale one).
    size = resize[1]
    if size < 384:
      crop_pct = pp.get("crop_pct") or 224 / 256
      resize, crop = ("shortest_edge", int(size / crop_pct)), (size, size)
    else:
      resize = ("square", (size, size))
  elif pp.get("do_center_crop", False) and pp.get("crop_size") is not None:
    crop_size = pp["crop_size"]
    crop = ((crop_size, crop_size) if isinstance(crop_size, int)
            else (int(crop_size["height"]), int(crop_size["width"])))
  mean = tuple(pp.get("image_mean", (0.5, 0.5, 0.5))) if pp.get("do_normalize", True) else (0.,) * 3
  std = tuple(pp.get("image_std", (0.5, 0.5, 0.5))) if pp.get("do_normalize", True) else (1.,) * 3
  rescale = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
  return Preprocessing(resize=resize, crop=crop, resample=_RESAMPLE[int(pp.get("resample", 2))],
                       rescale=rescale, mean=mean, std=std)


def preprocessing_of(name_or_path: str, revision: str | None = None) -> Preprocessing:
  """The preprocessing of a Hub id or directory, without reading its weights."""
  directory = resolve(name_or_path, revision)
  return preprocessing_from(directory, read_config(directory, name_or_path))


# ------------------------------------------------------------------------------------ teacher

