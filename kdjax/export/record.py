"""What every export format shares: the checks on the run and the output directory, the task's
class names, the provenance record (`kdjax_export.json`: run, step, sha1 of the run's
config.json, its last evaluation) and the atomic write of the output directory."""

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import ml_collections
from absl import logging

from kdjax import checkpoint, errors, files
from kdjax.data import sources

RECORD_NAME = "kdjax_export.json"


def read_run(workdir: Path) -> dict:
  """The config.json of the kdjax run `workdir` (a UserError if it is none)."""
  if not (workdir / "config.json").is_file() or not (workdir / "checkpoints").is_dir():
    raise errors.UserError(f"{workdir} is not a kdjax run directory (no config.json and "
                           "checkpoints/): pass the --workdir that python -m kdjax.main trained")
  return json.loads((workdir / "config.json").read_text())


def check_paths(workdir: Path, out: Path, overwrite: bool) -> dict:
  """The run's config.json, after checking that `workdir` is a kdjax run and that `out` may be
  written."""
  run = read_run(workdir)
  if out == workdir or out in workdir.parents or workdir in out.parents:
    raise errors.UserError(f"--out={out} overlaps the run {workdir}: export into a directory "
                           "outside the run")
  if out.exists() and not overwrite:
    raise errors.UserError(f"{out} exists: choose another --out, or pass --overwrite")
  return run


def class_names(run: dict, num_classes: int) -> list[str]:
  """The task's class names from its dataset builder; their indices when it cannot be opened."""
  try:  # the source applies data.exclude_classes
    data = ml_collections.ConfigDict(run["data"])
    names = list(sources.open_source(data, data.train_split).class_names)
  except Exception as e:  # noqa: BLE001  (any reason the dataset cannot be opened)
    logging.warning("export: class names of %s unavailable (%s); using their indices",
                    run["data"]["name"], e)
    names = []
  return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def last_eval(workdir: Path) -> dict:
  """The run's last evaluation metrics (keys with '/', e.g. test/accuracy)."""
  last = {}
  path = workdir / "metrics.jsonl"
  if path.is_file():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if any(k.endswith("/accuracy") and not k.startswith("train") for k in row):
        last = {k: v for k, v in row.items() if "/" in k and not k.startswith("train")}
  return last


def latest_step(workdir: Path) -> int:
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), max_to_keep=1_000_000,
                                 read_only=True)
  step = ckpt.latest_step()
  ckpt.close()
  if step is None:
    raise errors.UserError(f"{workdir} has no finished checkpoint yet: train it first "
                           f"(python -m kdjax.main --config=... --workdir={workdir})")
  return step


def record(workdir: Path, fmt: str, architecture: str, num_classes: int) -> dict:
  """kdjax_export.json: the format, the run, its latest checkpoint step, config hash and last
  evaluation."""
  return {"format": fmt, "run": str(workdir), "step": latest_step(workdir),
          "config_sha1": hashlib.sha1((workdir / "config.json").read_bytes()).hexdigest(),
          "evaluation": last_eval(workdir), "architecture": architecture,
          "num_classes": num_classes}


def write_dir(out: Path, fill: Callable[[Path], None], jsons: dict[str, dict]) -> None:
  """`out` filled by `fill(directory)` and with the JSON files `jsons` (name -> content), written
  in a temporary directory beside it and moved into place when complete: a failed export leaves
  no partial `out` (and an existing one as it was)."""
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
  try:
    fill(tmp)
    for name, obj in jsons.items():
      (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
    files.replace_dir(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
