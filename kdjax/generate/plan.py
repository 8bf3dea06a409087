"""Which images to generate: the real dataset's class names (and, with synth.multiple, its
per-class training counts), one prompt and one seed per image, classes interleaved.

GenerateError, the stage's bad-input error, lives here: the plan is the stage's first step and
every other module of kdjax.generate may import it.
"""

import dataclasses
import hashlib
import re

import numpy as np

from kdjax import errors
from kdjax.data import sources


class GenerateError(errors.UserError):
  """Generation cannot start or resume; the message says how to fix it."""


@dataclasses.dataclass
class Plan:
  """Every image to generate, in order: label, prompt and seed of image k."""

  labels: np.ndarray  # int32 [N]
  prompts: list
  seeds: np.ndarray  # int64 [N]: jax.random.key(seed) draws the image's initial latents

  def __len__(self):
    return len(self.labels)

  def sha1(self) -> str:
    h = hashlib.sha1(self.labels.tobytes())
    h.update(self.seeds.tobytes())
    h.update("\n".join(self.prompts).encode())
    return h.hexdigest()


@dataclasses.dataclass
class Target:
  """What a config asks for, resolved against the real dataset."""

  class_names: list  # the real dataset's, less data.exclude_classes (as the trainer has them)
  real_counts: np.ndarray | None  # its per-class training counts (synth.multiple only)
  counts: np.ndarray  # int64 [classes]: images to generate per class
  image_size: int  # the stored images' side
  plan: Plan


def prompt_name(class_name: str, rename: dict) -> str:
  """A ClassLabel name as prompt words: explicit renames first, then '_' and '-' as spaces."""
  if class_name in rename:
    return rename[class_name]
  return re.sub(r"[_\-]+", " ", class_name).strip()


def image_seed(base_seed: int, index: int) -> int:
  """The seed of plan image `index`: independent streams per (base_seed, index), 31 bits."""
  return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def make_plan(class_names, counts, templates, seed: int, rename: dict) -> Plan:
  """Classes interleaved: image k is the i-th of class c, for i = 0, 1, ... while c has some
  left. Class c's i-th image uses template i mod len(templates)."""
  counts = np.asarray(counts, np.int64)
  labels, prompts = [], []
  for i in range(int(counts.max(initial=0))):
    for c in np.flatnonzero(counts > i):
      labels.append(int(c))
      template = templates[i % len(templates)]
      prompts.append(template.format(c=prompt_name(class_names[c], rename)))
  seeds = np.asarray([image_seed(seed, k) for k in range(len(labels))], np.int64)
  return Plan(np.asarray(labels, np.int32), prompts, seeds)


def parse_rename(items) -> dict:
  """synth.rename's ("class_name=prompt words", ...) as {class_name: prompt words}."""
  out = {}
  for item in items:
    name, sep, words = item.partition("=")
    if not sep:
      raise GenerateError(f"synth.rename item {item!r}: write it as 'class_name=prompt words'")
    out[name.strip()] = words.strip()
  return out


def real_dataset(config):
  """(class names, per-class training counts or None, image size) of the real dataset: the
  same selection (data.val_fraction, n_per_class, fraction) the trainer will use."""
  builder = sources.dataset_builder(config.data)
  if not builder.is_prepared():  # e.g. cifar100's names are read from its files at preparation
    raise GenerateError(
        f"dataset {config.data.name!r} is not prepared under "
        f"{config.data.data_dir or '$TFDS_DATA_DIR (~/tensorflow_datasets)'}: prompts use its "
        "ClassLabel names (and synth.multiple its class counts), so prepare it first: "
        f"`tfds build {config.data.name} --file_format=array_record` (needs tensorflow-cpu "
        "and network once; docs/data.md), or set data.data_dir")
  label = builder.info.features["label"]
  names = [n for n in label.names if n not in config.data.exclude_classes]  # as the trainer
  shape = builder.info.features["image"].shape
  size = shape[0] if shape[0] and shape[0] == shape[1] else None
  counts = None
  if config.synth.multiple:
    src = sources.open_source(config.data, config.data.train_split)
    labels = src.labels()
    d = config.data
    if d.val_fraction > 0 or d.n_per_class or d.fraction:
      rows, _ = sources.split_train_val(labels, d, d.subset_seed)
      labels = labels[rows]
    counts = np.bincount(labels, minlength=len(names))
  return names, counts, size


def class_counts(config, names, real_counts) -> np.ndarray:
  """Images to generate per class: synth.images_per_class each, or synth.multiple x the real
  training count; none for synth.exclude_classes."""
  s = config.synth
  if bool(s.images_per_class) == bool(s.multiple):
    raise GenerateError("set exactly one of synth.images_per_class (images per class) and "
                        "synth.multiple (x the real training set of each class, e.g. 1 or 2)")
  if s.images_per_class:
    counts = np.full(len(names), int(s.images_per_class), np.int64)
  else:
    counts = np.round(np.asarray(real_counts, np.float64) * s.multiple).astype(np.int64)
  unknown = sorted(set(s.exclude_classes) - set(names))
  if unknown:
    raise GenerateError(f"synth.exclude_classes {unknown} are not classes of {config.data.name} "
                        f"(its classes: {names[:12]}{' ...' if len(names) > 12 else ''})")
  for name in s.exclude_classes:
    counts[names.index(name)] = 0
  unknown = sorted(set(parse_rename(s.rename)) - set(names))
  if unknown:
    raise GenerateError(f"synth.rename names {unknown}, not classes of {config.data.name} "
                        f"(its classes: {names[:12]}{' ...' if len(names) > 12 else ''})")
  return counts


def target_of(config) -> Target:
  """The plan of `config` (its synth section) on its real dataset (its data section)."""
  s = config.synth
  if not s.templates or any("{c}" not in t for t in s.templates):
    raise GenerateError(f"synth.templates {tuple(s.templates)} must each contain '{{c}}' (the "
                        "class name), e.g. ('a picture of a {c}',)")
  names, real_counts, real_size = real_dataset(config)
  counts = class_counts(config, names, real_counts)
  plan = make_plan(names, counts, tuple(s.templates), s.seed, parse_rename(s.rename))
  if not len(plan):
    raise GenerateError("the plan is empty: no class gets an image")
  return Target(names, real_counts, counts, s.image_size or real_size or s.resolution, plan)
