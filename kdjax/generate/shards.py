"""The output: a TFDS dataset directory of array_record shards (`<name>-train.array_record-
0000i-of-0000n`), each shard written under a temporary name and renamed when complete, and the
dataset's metadata, dataset_info.json last (what makes the directory a TFDS dataset)."""

import dataclasses
import io
import logging as std_logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath
from PIL import Image
from tensorflow_datasets.core import dataset_info, example_serializer, file_adapters, naming, splits

from kdjax import files

SPLIT = "train"
ENCODINGS = ("jpeg", "png")
DATASET_INFO = "dataset_info.json"


def dataset_name(real_name: str) -> str:
  return "kdjax_synth_" + re.sub(r"[^a-z0-9]+", "_", real_name.lower()).strip("_")


def features(class_names, size: int, encoding: str):
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(size, size, 3), encoding_format=encoding),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "prompt": tfds.features.Text(),
      "seed": tfds.features.Scalar(dtype=np.int64),
      "index": tfds.features.Scalar(dtype=np.int64),
  })


@dataclasses.dataclass(frozen=True)
class Layout:
  """Plan images in shards of `shard_size`: shard i holds images i * shard_size onwards."""

  num_images: int
  shard_size: int

  @property
  def num_shards(self) -> int:
    return -(-self.num_images // self.shard_size)

  @property
  def lengths(self) -> list[int]:
    return [min(self.shard_size, self.num_images - i * self.shard_size)
            for i in range(self.num_shards)]

  def shard_of(self, index: int) -> int:
    return index // self.shard_size

  def images(self, shards) -> np.ndarray:
    """The plan indices of `shards` (shard numbers), in order."""
    return np.concatenate([np.arange(i * self.shard_size, i * self.shard_size + self.lengths[i])
                           for i in shards] or [np.zeros(0, np.int64)])


class ShardWriter:
  """TFDS array_record shards `<name>-train.array_record-0000i-of-0000n` in `directory`.

  A shard is written under a unique temporary name (kdjax.files.tmp_name of a hidden name) and
  renamed when complete (rename is atomic on one filesystem): a killed run leaves either the
  whole shard or only a temporary file."""

  def __init__(self, directory: Path, name: str, num_shards: int, feats, encoding: str,
               jpeg_quality: int):
    self.directory, self.name, self.num_shards = directory, name, num_shards
    self.features, self.encoding, self.quality = feats, encoding, jpeg_quality
    self.serializer = example_serializer.ExampleSerializer(feats.get_serialized_info())

  def path(self, i: int) -> Path:
    return self.directory / (f"{self.name}-{SPLIT}.array_record-"
                             f"{i:05d}-of-{self.num_shards:05d}")

  def complete(self, i: int, expected: int) -> bool:
    path = self.path(i)
    if not path.is_file():
      return False
    try:
      reader = array_record_module.ArrayRecordReader(str(path))
      n = reader.num_records()
      reader.close()
    except Exception:  # noqa: BLE001  (unreadable: generated again)
      n = -1
    if n != expected:
      std_logging.getLogger(__name__).warning(
          "shard %s has %d of %d records: generating it again", path.name, n, expected)
      return False
    return True

  def _encoded(self, image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    if self.encoding == "jpeg":
      Image.fromarray(image).save(buf, format="JPEG", quality=self.quality)
    else:
      Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()

  def write(self, i: int, examples: list) -> None:
    path = self.path(i)
    tmp = files.tmp_name(path.with_name(f".{path.name}"))
    try:
      writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
      for ex in examples:
        ex = dict(ex, image=self._encoded(ex["image"]))
        writer.write(self.serializer.serialize_example(self.features.encode_example(ex)))
      writer.close()
      with open(tmp, "rb") as f:
        os.fsync(f.fileno())
      os.replace(tmp, path)
    finally:
      if os.path.lexists(tmp):
        os.remove(tmp)

  def finalize(self, shard_lengths, description: str, metadata: dict) -> None:
    """Writes the TFDS metadata; dataset_info.json (which makes the directory a dataset) last."""
    template = naming.ShardedFileTemplate(
        data_dir=epath.Path(self.directory), template=naming.DEFAULT_FILENAME_TEMPLATE,
        dataset_name=self.name, split=SPLIT, filetype_suffix="array_record")
    identity = dataset_info.DatasetIdentity(name=self.name, version=tfds.core.Version("1.0.0"),
                                            data_dir=str(self.directory), module_name="")
    info = dataset_info.DatasetInfo(builder=identity, features=self.features,
                                    description=description,
                                    metadata=tfds.core.MetadataDict(metadata))
    info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
    num_bytes = sum(self.path(i).stat().st_size for i in range(self.num_shards))
    info.set_splits(splits.SplitDict([splits.SplitInfo(
        name=SPLIT, shard_lengths=[int(n) for n in shard_lengths], num_bytes=num_bytes,
        filename_template=template)]))
    staging = Path(files.tmp_name(self.directory / ".metadata"))
    staging.mkdir()
    try:
      info.write_to_directory(staging)
      names = sorted(p.name for p in staging.iterdir())
      for n in [n for n in names if n != DATASET_INFO] + [DATASET_INFO]:
        os.replace(staging / n, self.directory / n)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
