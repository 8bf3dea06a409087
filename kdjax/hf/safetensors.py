"""Safetensors checkpoints: which files hold a checkpoint's weights (pickles refused, with the
command that converts them) and a reader that memory-maps them as numpy arrays."""

import json
from pathlib import Path

import numpy as np

from kdjax.errors import TeacherLoadError
from kdjax.hf.hub import (
  SAFETENSORS_INDEX,
  SAFETENSORS_NAME,
  UNSAFE_NAMES,
  download_hint,
  hub_pickles,
  is_hub_id,
)


def _convert_hint(source: str, config: dict) -> str:
  arch = (config.get("architectures") or ["AutoModel"])[0]
  return ("python -c \"import transformers; transformers."
          f"{arch}.from_pretrained('{source}').save_pretrained('OUT_DIR', "
          "safe_serialization=True)\" and pass OUT_DIR (copy preprocessor_config.json too)")


def weight_files(directory: Path, name: str, config: dict | None = None,
                 revision: str | None = None) -> list[Path]:
  """The safetensors files of a checkpoint directory; refuses pickles, names the fix."""
  config = config or {}
  index = directory / SAFETENSORS_INDEX
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [s for s in shards if not (directory / s).is_file()]
    if missing:
      raise TeacherLoadError(f"teacher {name!r}: {index} lists shards that are missing: "
                             f"{missing}; re-download the checkpoint")
    return [directory / s for s in shards]
  if (directory / SAFETENSORS_NAME).is_file():
    return [directory / SAFETENSORS_NAME]
  others = sorted(directory.glob("*.safetensors"))
  if len(others) == 1:
    return others
  unsafe = [n for n in UNSAFE_NAMES if (directory / n).exists()]
  if unsafe:
    raise TeacherLoadError(
        f"teacher {name!r}: refusing to load the pickle checkpoint {directory / unsafe[0]} "
        "(unpickling can run arbitrary code). Convert it once, where you trust the file: "
        + _convert_hint(str(directory), config))
  if is_hub_id(name):
    pickles = hub_pickles(name, revision)
    if pickles:
      raise TeacherLoadError(
          f"teacher {name!r}: the Hub repo has only pickle weights ({pickles[0]}); kdjax "
          "refuses them (unpickling can run arbitrary code). Convert it once, where you trust "
          "it: " + _convert_hint(name, config))
    raise TeacherLoadError(
        f"teacher {name!r}: its snapshot {directory} has no {SAFETENSORS_NAME} or "
        f"{SAFETENSORS_INDEX} (a partial download, or a repo without safetensors): run "
        f"{download_hint(name)}, or pass a local directory")
  raise TeacherLoadError(f"teacher {name!r}: no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX} in "
                         f"{directory}")




_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}


def _header(path: Path) -> tuple[dict, int]:
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    if size <= 0 or size > 100_000_000:
      raise TeacherLoadError(f"{path} is not a safetensors file (bad header size {size})")
    header = json.loads(f.read(size))
  header.pop("__metadata__", None)
  return header, 8 + size


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """Tensors of a safetensors file as numpy arrays, memory-mapped (bf16 widened to float32)."""
  header, start = _header(path)
  data = np.memmap(path, dtype=np.uint8, mode="r")
  out = {}
  for name, info in header.items():
    begin, end = info["data_offsets"]
    if start + end > data.size:
      raise TeacherLoadError(f"{path} is truncated: tensor {name!r} ends past the file; "
                             "re-download the checkpoint")
    raw = data[start + begin:start + end].view(_ST_DTYPES[info["dtype"]])
    if info["dtype"] == "BF16":  # numpy has no bfloat16: the high half of a float32
      raw = (raw.astype(np.uint32) << 16).view(np.float32)
    out[name] = raw.reshape(info["shape"])
  return out

