"""TFDS sources read without TensorFlow, and deterministic data-limited subsets.

Decision (docs/data.md): kdjax reads every dataset through `tfds` random-access data
sources over array_record shards. Reading needs no TensorFlow, so the training environment stays
small and the same on CPU, GPU and TPU. *Preparing* a catalog dataset (download + convert) is a
one-time step that, for most catalog builders, needs TensorFlow:
`pip install tensorflow-cpu && tfds build cifar10 --file_format=array_record`
(or `data.download=True` with tensorflow-cpu installed). The embedded dataset and the synthetic
shards are written by kdjax itself and need no TensorFlow at all.
"""

import dataclasses
import difflib
import glob
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from kdjax import errors
from kdjax.data import augment, embedded

# Datasets whose builders ship with kdjax (prepared locally, no network).
LOCAL_BUILDERS = {embedded.NAME: embedded.KdjaxDigits,
                  embedded.MNIST5K_NAME: embedded.KdjaxMnist5k}


@dataclasses.dataclass
class Source:
  """A random-access split: `read(indices)` -> (uint8 images [n,H,W,3], int32 labels [n])."""

  name: str
  split: str
  records: Any  # a tfds data source: __len__ and __getitem__
  num_classes: int
  class_names: list
  load_size: int | None = None  # resize every image to load_size x load_size when set
  # "square": resize to load_size x load_size | "shorter": the short side to load_size (aspect
  # kept), then the central load_size x load_size (torchvision Resize(s) + CenterCrop(s)) |
  # "shorter_full": the whole aspect-kept image on a canvas (`resize_on_load`)
  load_resize: str = "square"
  load_filter: str = "bilinear"  # shorter, shorter_full: bilinear | bicubic
  max_aspect: float = 2.0  # shorter_full: the canvas' long side is load_size x this
  keep_in_memory: bool = False  # decode the whole split once, on first use, and keep it
  _cache: tuple | None = dataclasses.field(default=None, init=False, repr=False)

  def __len__(self) -> int:
    return len(self.records)

  def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    if self.keep_in_memory:
      if self._cache is None:
        self._cache = self._decode(range(len(self)))
      return self._cache[0][indices], self._cache[1][indices]
    return self._decode(indices)

  def labels(self) -> np.ndarray:
    """All labels of the split (decodes images too: TFDS's mock data cannot skip them)."""
    if self.keep_in_memory:
      return self.read(np.arange(len(self)))[1]
    return np.asarray([self.records[i]["label"] for i in range(len(self))], np.int32)

  def _decode(self, indices) -> tuple[np.ndarray, np.ndarray]:
    examples = [self.records[int(i)] for i in indices]
    images = np.stack([self._image(ex["image"]) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.int32)
    return images, labels

  def _image(self, image: np.ndarray) -> np.ndarray:
    return stored_image(image, self.load_size, self.load_resize, self.max_aspect,
                        self.load_filter)


def stored_image(image: np.ndarray, load_size: int | None, load_resize: str = "square",
                 max_aspect: float = 2.0, load_filter: str = "bilinear") -> np.ndarray:
  """A decoded uint8 image [H, W] or [H, W, 1|3] as a source stores it: RGB (grey-scale
  repeated, so every model and teacher sees 3 channels), resized on load (`resize_on_load`)
  when `load_size` is set and the image is not already that square (a canvas always)."""
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  square = image.shape[:2] == (load_size, load_size)
  if load_size and (load_resize == "shorter_full" or not square):
    image = resize_on_load(image, load_size, load_resize, max_aspect, load_filter)
  return image


LOAD_RESIZES = ("square", "shorter", "shorter_full")  # data.load_resize
# data.load_filter: torchvision's Resize on PIL images is bilinear; timm's eval transforms of
# the AFT reference's models are bicubic
LOAD_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
# shorter_full's 4th channel: 0 on the canvas' padding; on the image, whether it was transposed
# (a portrait image stored as a landscape one)
FULL_UPRIGHT, FULL_TRANSPOSED = augment.FULL_UPRIGHT, augment.FULL_TRANSPOSED


def canvas_width(size: int, max_aspect: float) -> int:
  return max(size, int(round(size * max_aspect)))


def resize_on_load(image: np.ndarray, size: int, how: str = "square",
                   max_aspect: float = 2.0, filter_: str = "bilinear") -> np.ndarray:
  """uint8 [H,W,3] -> the stored image.

  square: [size,size,3], the image warped (bicubic). shorter: [size,size,3], the short side
  resized to `size` keeping the aspect (`filter_`: bilinear, torchvision Resize's default for
  PIL images, or bicubic, timm's; the long side int(size * long / short)), then the central
  square (torchvision CenterCrop's rounding). shorter_full: [size, L, 4], L =
  canvas_width(size, max_aspect): the same resize, a portrait image transposed to landscape,
  its long side centre-cropped to L only beyond max_aspect, then padded to L by repeating its
  last column; channel 3 marks the image's columns (FULL_UPRIGHT, or FULL_TRANSPOSED) and the
  padding (0). The random-resized crop and the eval view (kdjax.data.augment) are taken from
  the whole image, as torchvision's from the original."""
  if how == "square":
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
  h, w = image.shape[:2]
  nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
  if (nh, nw) != (h, w):
    image = np.asarray(Image.fromarray(image).resize((nw, nh), LOAD_FILTERS[filter_]))
  if how == "shorter":
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return image[top:top + size, left:left + size]
  transposed = nh > nw
  if transposed:
    image = image.transpose(1, 0, 2)
  width = canvas_width(size, max_aspect)
  if image.shape[1] > width:
    left = int(round((image.shape[1] - width) / 2.0))
    image = image[:, left:left + width]
  n = image.shape[1]
  out = np.empty((size, width, 4), np.uint8)
  out[:, :n, :3] = image
  out[:, n:, :3] = image[:, -1:]
  out[:, :n, 3] = FULL_TRANSPOSED if transposed else FULL_UPRIGHT
  out[:, n:, 3] = 0
  return out


@dataclasses.dataclass
class _Relabelled:
  """The records of a split without some classes: record i is `records[keep[i]]` with its label
  mapped through `mapping` (old label -> new, contiguous)."""

  records: Any
  keep: np.ndarray
  mapping: np.ndarray

  def __len__(self) -> int:
    return len(self.keep)

  def __getitem__(self, i):
    example = dict(self.records[int(self.keep[i])])
    example["label"] = int(self.mapping[example["label"]])
    return example


def without_classes(records, names: list, exclude) -> tuple[Any, list]:
  """(records, class names) with the classes named in `exclude` removed and the other labels
  renumbered in order (e.g. Caltech-101 without TFDS's `background_google`: 101 classes, as
  torchvision's loader). Reads every label once."""
  exclude = [e for e in exclude if e]
  unknown = sorted(set(exclude) - set(names))
  if unknown:
    raise errors.UserError(f"data.exclude_classes {unknown} are not classes of this dataset "
                           f"(its classes: {names[:12]}{' ...' if len(names) > 12 else ''})")
  dropped = np.isin(np.asarray(names), exclude)
  mapping = np.where(dropped, -1, np.cumsum(~dropped) - 1)
  labels = np.asarray([records[i]["label"] for i in range(len(records))], np.int64)
  keep = np.flatnonzero(~dropped[labels])
  return _Relabelled(records, keep, mapping), [n for n, d in zip(names, dropped) if not d]


def dataset_builder(cfg) -> tfds.core.DatasetBuilder:
  """The TFDS builder of dataset `cfg.name` (kdjax's local ones prepared on first use)."""
  data_dir = cfg.data_dir or None
  if cfg.name in LOCAL_BUILDERS:
    builder = LOCAL_BUILDERS[cfg.name](data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      tfds.disable_progress_bar()
      builder.download_and_prepare()  # local files only
    return builder
  try:
    builder = tfds.builder(cfg.name, data_dir=data_dir)
  except ValueError as e:
    if (isinstance(e, tfds.core.registered.DatasetNotFoundError)
        or "builder name string" in str(e)):  # a name TFDS cannot parse
      raise unknown_dataset(cfg.name, data_dir) from e
    raise
  if cfg.download and not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  return builder


def _data_dir(data_dir: str | None) -> str:
  return os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)


def prepared_datasets(data_dir: str | None) -> list[str]:
  """Names of the datasets prepared under `data_dir` that kdjax reads (array_record, TFDS
  layout NAME/[CONFIG/]VERSION/dataset_info.json)."""
  root = _data_dir(data_dir)
  version = re.compile(r"^\d+\.\d+\.\d+$")  # not TFDS's unfinished *.incomplete* folders
  names = set()
  for depth in (2, 3):
    for path in glob.glob(os.path.join(root, *["*"] * depth, "dataset_info.json")):
      if not version.match(os.path.basename(os.path.dirname(path))):
        continue
      try:
        with open(path) as f:
          readable = json.load(f).get("fileFormat") == "array_record"
      except (OSError, ValueError):
        readable = False
      if readable:
        names.add(os.path.relpath(path, root).split(os.sep)[0])
  return sorted(names)


def unknown_dataset(name: str, data_dir: str | None) -> errors.UserError:
  """The error for a data.name that is neither prepared in data_dir nor in the TFDS catalog:
  what is there, the closest catalog names, and how to prepare a dataset."""
  root = _data_dir(data_dir)
  local = sorted(set(prepared_datasets(data_dir)) | set(LOCAL_BUILDERS))
  catalog = [n for n in tfds.list_builders(with_community_datasets=False)
             if n not in LOCAL_BUILDERS]
  close = difflib.get_close_matches(name, catalog, n=3, cutoff=0.6)
  close_local = difflib.get_close_matches(name, local, n=1, cutoff=0.6)
  hint = f" (did you mean {close_local[0]!r}?)" if close_local else ""
  return errors.UserError(
      f"unknown dataset data.name={name!r}{hint}: it is not prepared in {root} and not a TFDS "
      f"catalog name. Readable here without network: {local}; closest TFDS catalog names: "
      f"{close}. Set data.name to one of these (and data.data_dir to where it is prepared); "
      "prepare a catalog dataset once with `tfds build NAME --file_format=array_record "
      f"--data_dir={root}` (needs network and tensorflow-cpu), or a folder of images "
      f"SRC/<split>/<class>/<image> with `python -m kdjax.data.folder --src=SRC "
      f"--data_dir={root} --name=NAME`")


def open_source(cfg, split: str) -> Source:
  """Opens `split` (any TFDS split string, e.g. 'train[:90%]') of dataset `cfg.name`."""
  builder = dataset_builder(cfg)
  try:
    records = builder.as_data_source(split=split)
  except Exception as e:  # TFDS raises several types for "not prepared / wrong format"
    data_dir = _data_dir(cfg.data_dir)
    cause = (str(e).strip().splitlines() or [""])[0]
    raise errors.UserError(
        f"dataset {cfg.name!r} split {split!r} is not prepared as array_record under "
        f"{data_dir}. Prepare it once with network access: `pip install tensorflow-cpu && "
        f"tfds build {cfg.name} --file_format=array_record --data_dir={data_dir}`, or set "
        f"--config.data.download=True (needs tensorflow-cpu), or point "
        f"--config.data.data_dir at a prepared copy. ({type(e).__name__}: {cause})") from e
  names = list(builder.info.features["label"].names)
  exclude = cfg.get("exclude_classes", ())
  if exclude:
    records, names = without_classes(records, names, exclude)
  return Source(name=cfg.name, split=split, records=records, num_classes=len(names),
                class_names=names, keep_in_memory=cfg.in_memory, **_load_args(cfg))


def _load_args(cfg) -> dict:
  """Source's resizing arguments from `config.data` (keys a partial config may lack)."""
  how = cfg.get("load_resize", "square")
  if how != "square" and not cfg.load_size:
    raise errors.UserError(f"data.load_resize={how!r} resizes to data.load_size: set "
                           "data.load_size (e.g. 256)")
  return {"load_size": cfg.load_size or None, "load_resize": how,
          "load_filter": cfg.get("load_filter", "bilinear"),
          "max_aspect": cfg.get("max_aspect", 2.0)}


def open_synthetic(directory: str, cfg, real: Source) -> Source:
  """A `kdjax.generate` output (any TFDS dataset directory) whose ClassLabel names must equal the
  real dataset's, so a synthetic label means the same class."""
  path = os.path.expanduser(directory)
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    spec = os.path.join(path, "generate.json")
    raise errors.UserError(
        f"data.synthetic {directory!r} is not a finished TFDS dataset directory (no "
        "dataset_info.json)" + (": its generation has not finished; run the same "
        "`python -m kdjax.generate ... --workdir` again to complete it" if os.path.exists(spec)
        else ": write one with `python -m kdjax.generate --config=configs/synth/<task>.py "
        f"--workdir={directory}`"))
  builder = tfds.builder_from_directory(path)
  names = list(builder.info.features["label"].names)
  if names != real.class_names:
    raise errors.UserError(f"data.synthetic {directory!r} has classes {names[:5]}... but "
                     f"{real.name} has {real.class_names[:5]}...: generate it from "
                     f"{real.name}'s class names (synth config data.name={real.name!r})")
  return Source(name=f"{real.name}+{builder.info.name}", split="train",
                records=builder.as_data_source(split="train"), num_classes=real.num_classes,
                class_names=names, keep_in_memory=cfg.in_memory, **_load_args(cfg))


@dataclasses.dataclass
class ConcatSource:
  """Sources end to end: row r of part i is global row offsets[i] + r. Rows of parts listed in
  `unlabelled` read with label -1 (the trainer's CE skips them)."""

  parts: list
  unlabelled: tuple = ()

  def __post_init__(self):
    self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
    first = self.parts[0]
    self.name, self.split = first.name, first.split
    self.num_classes, self.class_names = first.num_classes, first.class_names

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    part = np.searchsorted(self.offsets, indices, side="right") - 1
    images, labels = [None] * len(indices), np.zeros(len(indices), np.int32)
    for i in np.unique(part):
      where = np.flatnonzero(part == i)
      im, lb = self.parts[i].read(indices[where] - self.offsets[i])
      labels[where] = -1 if i in self.unlabelled else lb
      for j, w in enumerate(where):
        images[w] = im[j]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise errors.UserError(f"real and synthetic images differ in size {sorted(shapes)}: set "
                             "--config.data.load_size (or generate at the real size: "
                             "synth.image_size)")
    return (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)), labels


def split_train_val(labels: np.ndarray, cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic, class-stratified train / validation / data-limited selection.

  Per class, the examples are permuted by `seed`; the first round(val_fraction * n_c) go to
  validation; of the rest, the first `n_per_class` (or round(fraction * n_c)) are kept for
  training. Returns sorted index arrays into the split, (train, val).
  """
  if cfg.n_per_class and cfg.fraction:
    raise errors.UserError("set at most one of data.n_per_class and data.fraction")
  rng = np.random.default_rng(seed)
  train, val = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_val = int(round(cfg.val_fraction * len(idx)))
    val.append(idx[:n_val])
    rest = idx[n_val:]
    if cfg.n_per_class:
      if cfg.n_per_class > len(rest):
        raise errors.UserError(f"data.n_per_class={cfg.n_per_class} but class {c} has only "
                               f"{len(rest)} training examples: lower data.n_per_class (or "
                               "data.val_fraction)")
      rest = rest[:cfg.n_per_class]
    elif cfg.fraction:
      rest = rest[:max(1, int(round(cfg.fraction * len(rest))))]
    train.append(rest)
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def left_out(num_examples: int, train: np.ndarray, val: np.ndarray) -> np.ndarray:
  """The rows of a split that are in neither `train` nor `val` (sorted): the images a
  data-limited selection (`split_train_val`) leaves out, never the validation hold-out."""
  return np.setdiff1d(np.arange(num_examples), np.concatenate([train, val]))
