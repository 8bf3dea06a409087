r"""A folder of images as a local TFDS dataset (array_record, no TensorFlow), read by kdjax as
any other dataset (`--config.data.name=NAME --config.data.data_dir=DIR`).

  python -m kdjax.data.folder --src=SRC --data_dir=DIR --name=NAME [--overwrite]

Layout: SRC/<split>/<class>/<image>, e.g. SRC/train/cat/1.jpg, SRC/test/cat/2.png. Every folder
in SRC is a split (`train` is required; names of letters, digits and _); the classes are the
folders of SRC/train, sorted (label i is the i-th), and the other splits may only use those.
Any image Pillow decodes is stored as RGB PNG (grey, palette and RGBA converted); hidden files
are skipped. Before anything is written every image is decoded: one that cannot be is named and
DIR is left as it was. A dataset already in DIR/NAME is refused, or with --overwrite replaced once
the new one is complete.

The writer (`write`) also serves datasets with their own split lists (kdjax/data/prepare.py:
MIT Indoor-67, FGVC-Aircraft).
"""

import concurrent.futures
import dataclasses
import io
import os
import re
import shutil
import tempfile

from absl import app, flags

from kdjax import cli, errors, runtime

VERSION = "1.0.0"
_SHOWN = 5  # undecodable files named in the error; the rest are counted


@dataclasses.dataclass(frozen=True)
class Example:
  key: str  # unique in its split: the image's path relative to the split's folder
  path: str
  label: str  # a class name


def _visible(names) -> list[str]:
  return sorted(n for n in names if not n.startswith("."))


def scan(src: str) -> tuple[list[str], dict[str, list[Example]]]:
  """(class names, split -> examples) of SRC/<split>/<class>/<image>; refuses another layout,
  a class folder that train lacks, an empty split and an empty train class."""
  src = os.path.expanduser(src)
  layout = ("lay it out as SRC/<split>/<class>/<image>, e.g. SRC/train/cat/1.jpg, "
            "SRC/test/cat/2.jpg")
  if not os.path.isdir(src):
    raise errors.UserError(f"--src={src}: no such directory; {layout}")
  splits = [s for s in _visible(os.listdir(src)) if os.path.isdir(os.path.join(src, s))]
  if "train" not in splits:
    raise errors.UserError(f"{src} has no train/ folder (found {splits}): {layout}")
  bad = [s for s in splits if not re.fullmatch(r"\w+", s)]
  if bad:
    raise errors.UserError(f"split folders {bad} in {src}: rename them with letters, digits and "
                           "_ only (TFDS split names)")
  classes = [c for c in _visible(os.listdir(os.path.join(src, "train")))
             if os.path.isdir(os.path.join(src, "train", c))]
  out = {}
  for split in splits:
    root = os.path.join(src, split)
    entries = _visible(os.listdir(root))
    loose = [e for e in entries if not os.path.isdir(os.path.join(root, e))]
    if loose:
      raise errors.UserError(f"{os.path.join(root, loose[0])} is not in a class folder: move "
                             f"the {len(loose)} file(s) of {root} into {root}/<class>/")
    unknown = [e for e in entries if e not in classes]
    if unknown:
      raise errors.UserError(
          f"class folder(s) {unknown[:_SHOWN]} of {split}/ are not in train/ (the classes are "
          f"train's folders {classes[:_SHOWN]}{'...' if len(classes) > _SHOWN else ''}): "
          f"rename them to a train class, or add {os.path.join(src, 'train', unknown[0])}/")
    examples = []
    for label in entries:
      found = [Example(os.path.relpath(path, root), path, label)
               for path in _files(os.path.join(root, label))]
      if not found and split == "train":
        raise errors.UserError(f"class folder {os.path.join(root, label)} has no images: add "
                               "some or delete the folder")
      examples += found
    if not examples:
      raise errors.UserError(f"split {split!r} ({root}) has no images: add some or delete the "
                             "folder")
    out[split] = examples
  return classes, out


def _files(directory: str) -> list[str]:
  """Every non-hidden file under `directory`, in sorted order."""
  out = []
  for parent, dirs, files in os.walk(directory):
    dirs[:] = _visible(dirs)
    out += [os.path.join(parent, f) for f in _visible(files)]
  return sorted(out)


def _decode(path: str):
  """The image as RGB (fully loaded), or the reason it cannot be decoded."""
  from PIL import Image

  try:
    with Image.open(path) as image:
      return image.convert("RGB"), None
  except Exception as e:  # noqa: BLE001  (any decoder failure is the file's, named to the user)
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None, f"{path} ({reason})"


def check_images(paths: list[str]) -> None:
  """Decodes every image (threads: Pillow's decoders release the GIL); refuses the set if any
  fails, naming the first few files."""
  workers = min(16, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    failed = [why for _, why in pool.map(_decode, paths, chunksize=64) if why]
  if failed:
    more = f" and {len(failed) - _SHOWN} more" if len(failed) > _SHOWN else ""
    raise errors.UserError(
        f"{len(failed)} of {len(paths)} images cannot be decoded: {'; '.join(failed[:_SHOWN])}"
        f"{more}. Delete or replace them, then run again (nothing was written)")


def _builder_class(name: str, classes: list[str], splits: dict, description: str,
                   homepage: str):
  import tensorflow_datasets as tfds

  dataset_name, version = name, VERSION

  class FolderDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = dataset_name
    VERSION = tfds.core.Version(version)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=description, homepage=homepage or None,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(None, None, 3)),
              "label": tfds.features.ClassLabel(names=classes)}),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager  # local files only
      return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples):
      for ex in examples:
        image, why = _decode(ex.path)
        if image is None:  # checked before writing: the file changed since
          raise errors.UserError(f"{why}: the file changed while preparing; run again")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        buf.seek(0)
        yield ex.key, {"image": buf, "label": ex.label}

  return FolderDataset


def write(name: str, data_dir: str, classes: list[str], splits: dict[str, list[Example]], *,
          description: str = "", homepage: str = "", overwrite: bool = False) -> str:
  """Writes `splits` (split -> examples) as the TFDS dataset `name` under data_dir and returns
  its directory. Every check (name, labels, an existing dataset, every image decoded) comes
  before the first write; the dataset is built in a temporary folder next to it and moved into
  place only when complete, so an existing one is replaced whole or not at all."""
  import tensorflow_datasets as tfds

  if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise errors.UserError(f"--name={name!r}: use lower-case letters, digits and _ (a TFDS "
                           "dataset name, starting with a letter)")
  if name in tfds.list_builders(with_community_datasets=False):
    raise errors.UserError(f"--name={name!r} is a TFDS catalog dataset, so kdjax would read the "
                           "catalog's, not this one: choose another name")
  if not classes:
    raise errors.UserError(f"dataset {name!r} has no classes")
  known = set(classes)
  for split, examples in splits.items():
    stray = [ex for ex in examples if ex.label not in known]
    if stray:
      raise errors.UserError(f"{stray[0].path} ({split}) is labelled {stray[0].label!r}, not one "
                             f"of the {len(classes)} classes")
  root = os.path.abspath(os.path.expanduser(data_dir))
  final = os.path.join(root, name)
  if os.path.exists(final) and not overwrite:
    raise errors.UserError(f"{final} already exists (a previous preparation): pass --overwrite "
                           "to replace it, or choose another --name")
  check_images([ex.path for split in splits.values() for ex in split])

  os.makedirs(root, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.preparing.", dir=root)
  try:
    tfds.disable_progress_bar()
    builder = _builder_class(name, list(classes), splits, description, homepage)(
        data_dir=staging, file_format="array_record")
    builder.download_and_prepare()
    replaced = None
    if os.path.exists(final):
      replaced = tempfile.mkdtemp(prefix=f".{name}.replaced.", dir=root)
      os.rename(final, os.path.join(replaced, name))
    os.rename(os.path.join(staging, name), final)
    if replaced:
      shutil.rmtree(replaced)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return os.path.join(final, VERSION)


def prepare(src: str, data_dir: str, name: str, overwrite: bool = False) -> str:
  """SRC/<split>/<class>/<image> -> the TFDS dataset `name` under data_dir (see the module)."""
  classes, splits = scan(src)
  return write(name, data_dir, classes, splits, overwrite=overwrite,
               description=f"Images of {len(classes)} classes from {os.path.abspath(src)}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_libraries()
  f = flags.FLAGS
  path = prepare(f.src, f.data_dir, f.name, overwrite=f.overwrite)
  print(f"prepared {f.name} in {path}; train on it with --config.data.name={f.name} "
        f"--config.data.data_dir={f.data_dir}", flush=True)


def run():
  # Flags are defined here, not on import: kdjax/data/prepare.py imports this module, and
  # kdjax.main's flags (--overwrite) would clash with these.
  flags.DEFINE_string("src", None, "SRC/<split>/<class>/<image> (train/ required).")
  flags.DEFINE_string("data_dir", None, "TFDS data directory to write DIR/NAME/ into.")
  flags.DEFINE_string("name", None, "Dataset name (what --config.data.name then reads).")
  flags.DEFINE_bool("overwrite", False, "Replace DIR/NAME if it exists.")
  flags.mark_flags_as_required(["src", "data_dir", "name"])
  cli.run(main)


if __name__ == "__main__":
  run()
