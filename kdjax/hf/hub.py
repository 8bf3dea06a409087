"""The Hugging Face Hub: ids and local directories resolved to a checkpoint directory, with the
HF cache, `HF_HOME` and `HF_HUB_OFFLINE` honoured, and errors that name the command that fixes
them. The one place kdjax asks the Hub for anything (teachers, pre-trained students, the
diffusion pipeline).
"""

import json
import os
from pathlib import Path

import huggingface_hub
import jax
from huggingface_hub import constants
from huggingface_hub import errors as hf_errors
from jax.experimental import multihost_utils

from kdjax.errors import TeacherLoadError

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
UNSAFE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth",
                "model.ckpt")
# Only what a model needs: not the repo's other weight variants (fp16 copies, open_clip, ...).
MODEL_FILES = ["config.json", "preprocessor_config.json", SAFETENSORS_NAME, SAFETENSORS_INDEX,
               "model-*-of-*.safetensors"]
LOCAL_HINT = (" (no local directory of that name exists either; a teacher adapted to the task "
              "is made by `python -m kdjax.main --config=configs/adapt.py:model=<hub id>,"
              "data=<task> --workdir=<dir>`)")


def offline() -> bool:
  env = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
  return bool(constants.HF_HUB_OFFLINE) or env


def download_hint(repo_id: str, include: str = "'*.json' '*.safetensors'",
                  revision: str | None = None) -> str:
  rev = f" --revision {revision}" if revision else ""
  return (f"`hf download {repo_id} --include {include}{rev}` on a machine with network "
          "and the same HF_HOME (or copy that cache here)")


def is_hub_id(name_or_path: str) -> bool:
  return not Path(os.path.expanduser(name_or_path)).is_dir()


def resolve(name_or_path: str, revision: str | None = None, *, what: str = "teacher",
            allow_patterns=tuple(MODEL_FILES), include: str = "'*.json' '*.safetensors'",
            local: str = f"config.json and {SAFETENSORS_NAME}", local_hint: str = LOCAL_HINT,
            example: str = "microsoft/resnet-50") -> Path:
  """A local directory as is; a Hub id -> its snapshot directory in the HF cache (downloaded
  unless offline). `what`, `include`, `local`, `local_hint` and `example` word the errors for
  the kind of checkpoint asked for."""
  path = Path(os.path.expanduser(name_or_path))
  if path.is_dir():
    return path
  if name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1:
    raise TeacherLoadError(
        f"{what} {name_or_path!r}: no such directory; pass a directory with {local}, or a Hub "
        f"id such as {example!r}")
  is_offline = offline()
  try:
    return Path(huggingface_hub.snapshot_download(
        name_or_path, revision=revision, allow_patterns=list(allow_patterns),
        local_files_only=is_offline))
  except hf_errors.LocalEntryNotFoundError as e:
    why = ("HF_HUB_OFFLINE=1" if is_offline else "the Hub could not be reached")
    raise TeacherLoadError(
        f"{what} {name_or_path!r} is not in the HF cache ({constants.HF_HUB_CACHE}) and {why}: "
        f"run {download_hint(name_or_path, include, revision)}, or pass a local directory with "
        f"{local}{local_hint}") from e
  except hf_errors.HFValidationError as e:
    raise TeacherLoadError(
        f"{what} {name_or_path!r} is neither a directory nor a valid Hub id "
        f"('org/name', e.g. {example!r})") from e
  except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
    raise TeacherLoadError(
        f"{what} {name_or_path!r} (revision {revision or 'main'}) is not on the Hub or is "
        "private/gated (log in with `hf auth login`); check the id or pass a local "
        f"directory{local_hint}") from e


def fetch_once(name_or_path: str, revision: str | None = None, **kwargs) -> Path:
  """`resolve` for multi-process runs: process 0 downloads into the (shared) cache while the
  others wait, then all of them resolve from it. One process: plain `resolve`."""
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      resolve(name_or_path, revision, **kwargs)
    multihost_utils.sync_global_devices(f"kdjax fetched {name_or_path}")
  return resolve(name_or_path, revision, **kwargs)


def hub_pickles(repo_id: str, revision: str | None) -> list[str]:
  """The pickle weight files of a Hub repo (empty when offline or unreachable)."""
  if offline():
    return []
  try:
    files = huggingface_hub.list_repo_files(repo_id, revision=revision)
  except Exception:  # noqa: BLE001  (any network or Hub error: we only wanted a better message)
    return []
  return [f for f in files if f.split("/")[-1] in UNSAFE_NAMES]


def read_config(directory: Path, name: str) -> dict:
  """A checkpoint directory's config.json."""
  path = directory / "config.json"
  if not path.is_file():
    raise TeacherLoadError(f"teacher {name!r}: no config.json in {directory}; a teacher "
                           "directory holds config.json and model.safetensors, as "
                           "transformers' save_pretrained writes them")
  return json.loads(path.read_text())


def source_record(name_or_path: str, directory: Path) -> dict:
  """Where a pre-trained model came from (`directory`: what `resolve` gave for it), precisely
  enough to load the same weights later: a Hub id with the snapshot's commit, or a local
  directory's absolute path."""
  directory = Path(directory)
  if is_hub_id(name_or_path):
    commit = directory.name if directory.parent.name == "snapshots" else None
    return {"source": name_or_path, "hub": True, "revision": commit}
  return {"source": str(directory.resolve()), "hub": False, "revision": None}

