"""A run directory: owned by one config, and recording where its inputs came from.

`claim` makes a directory this config's run (new, or a run of the same config, resumed) before
anything is written there; another config's checkpoints are refused unless `overwrite` deletes
that run. `write_provenance` records the exact teachers and pre-trained weights a run used.
"""

import json
import os
import shutil

import jax
from absl import logging
from jax.experimental import multihost_utils

from kdjax import checkpoint, configlib, errors, files
from kdjax.hf import hub

# Keys that change how a run is logged, evaluated, stored or laid out, never what it trains:
# a workdir's run may resume with other values of these. Any other difference is refused.
RESUMABLE_KEYS = (
    "log_every_steps", "eval_every_steps", "eval_every_epochs", "checkpoint_every_steps",
    "max_to_keep",
    "eval_batch_size", "fast_cpu_convolutions", "data.data_dir", "data.download",
    "data.num_workers", "data.prefetch", "data.in_memory", "model.param_sharding",
    "model.fsdp_min_size", "teacher.param_sharding", "teacher.fsdp_min_size", "teacher.evaluate",
    "teacher.cache_dir", "teacher.cache_shard_size",
)
# What a run writes into its workdir (--overwrite deletes these and nothing else; a teacher
# cache is kept: its own record says what it was made from, and a different one is refused; an
# adapted teacher, WORKDIR/teacher, is its own run directory, and kdjax.train.adapt rewrites
# adapt.json before every distillation).
RUN_FILES = ("checkpoints", checkpoint.DAMAGED_DIR, "metrics.jsonl", "tensorboard",
             "config.json", "cost.json", "teachers.json", "pretrained.json", "hf_config.json",
             "rho.json", "rho.npy")
REFUSAL_FIX = ": use another --workdir, or pass --overwrite to delete that run and start again"
ADAPT_PREFIX = "teacher.adapt."  # the teacher's adaptation run (kdjax.train.adapt)


def differences(theirs: dict, mine: dict, ignore=()) -> list[tuple]:
  """(key, theirs, mine) for every key a resumed run may not change (`ignore`: keys not
  compared). Keys missing from an older run's config.json count as their default (keys added
  since). The adaptation run's keys (teacher.adapt.*) count as its own run's do; with it,
  teacher.models is always that workdir's adapted teacher, however the workdir is spelt."""
  default = configlib.flatten(json.loads(configlib.base().to_json_best_effort()))
  resumable = {*RESUMABLE_KEYS, *(ADAPT_PREFIX + k for k in RESUMABLE_KEYS), *ignore}
  if any(k.startswith(ADAPT_PREFIX) for k in theirs) and any(
      k.startswith(ADAPT_PREFIX) for k in mine):
    resumable.add("teacher.models")
  # a key added (or removed) since that run counts as its default on the side that lacks it
  theirs = {**{k: default[k] for k in set(mine) - set(theirs) if k in default}, **theirs}
  mine = {**{k: default[k] for k in set(theirs) - set(mine) if k in default}, **mine}
  return [(k, theirs.get(k, "<absent>"), mine.get(k, "<absent>"))
          for k in files.differences(theirs, mine, ignore=resumable)]


def refusal(config, workdir: str, ignore=()) -> str | None:
  """Why `workdir` is not this config's run directory (None: it is, or it is new). Reads only.
  `ignore`: keys not compared (e.g. values the trainer derives before writing config.json)."""
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not (os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))):
    return None
  if not os.path.isfile(path):
    return f"{workdir} holds checkpoints but no config.json saying what made them"
  try:
    theirs = configlib.flatten(files.read_json(path))
  except json.JSONDecodeError:
    theirs = {"config.json": "unreadable"}
  diff = differences(theirs, configlib.flatten(json.loads(config.to_json_best_effort())),
                     ignore)
  if not diff:
    return None
  shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:4])
  return (f"{workdir} holds a run of a different config ({shown}"
          f"{'; ...' if len(diff) > 4 else ''})")


def claim(config, workdir: str, overwrite: bool) -> None:
  """Makes `workdir` this config's run directory (its first write: config.json)."""
  why = refusal(config, workdir)
  if why and not overwrite:
    raise errors.UserError(why + REFUSAL_FIX)
  if jax.process_index() == 0:
    if why:
      logging.warning("--overwrite: %s; deleting it", why)
      for name in RUN_FILES:
        target = os.path.join(workdir, name)
        if os.path.isdir(target) and not os.path.islink(target):
          shutil.rmtree(target)
        elif os.path.lexists(target):
          os.remove(target)
    os.makedirs(workdir, exist_ok=True)
    files.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("kdjax workdir claimed")


def write_provenance(config, workdir: str, teacher_records: list, pretrained_dir) -> None:
  """teachers.json (the exact teachers: source, revision / run step, weights' sha1),
  pretrained.json (the exact weights the student started from) and hf_config.json (a Hub
  architecture's config, for kdjax.export)."""
  if jax.process_index() != 0:
    return
  if teacher_records:
    files.write_json(os.path.join(workdir, "teachers.json"), teacher_records)
  if config.model.pretrained:
    files.write_json(os.path.join(workdir, "pretrained.json"),
                     hub.source_record(config.model.pretrained, pretrained_dir))
  if pretrained_dir is not None:
    files.write_json(os.path.join(workdir, "hf_config.json"),
                     hub.read_config(pretrained_dir, str(pretrained_dir)))


def truncate_metrics(workdir: str, start_step: int) -> None:
  """Drops metrics.jsonl rows of steps after `start_step` (logged by a run that was killed
  before checkpointing them; they are logged again as the steps are redone)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.isfile(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= start_step:
        keep.append(line)
    except (json.JSONDecodeError, KeyError):  # a line cut by the kill
      pass
  if len(keep) != len(lines):
    files.write_text(path, "".join(keep))
