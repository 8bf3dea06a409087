"""One command for paper A's pipeline: adapt the Hub teacher to the task, then distil from it.

`python -m kdjax.main` runs `train_and_evaluate` here. A config without `teacher.adapt` goes
straight to the trainer. With it (a distillation config of configs/resnet18_cifar.py or
configs/paper_a.py):

  1. the teacher's adaptation run (`teacher.adapt`: a whole trainer config, e.g. a linear probe
     of a new head on microsoft/resnet-50) trains into WORKDIR/teacher, an ordinary kdjax run
     directory: resumed if it was killed, skipped when finished (its cost.json, written last);
  2. WORKDIR/adapt.json records it: the teacher's source (Hub commit or directory), the run
     directory, its last step and final evaluation;
  3. the distillation run trains in WORKDIR with teacher.models = WORKDIR/teacher (its
     config.json keeps teacher.adapt, so another adaptation is another run).

Nothing is written (no WORKDIR/teacher, no WORKDIR/config.json) until the inputs of both runs
are there: the Hub teacher, the dataset's splits, synthetic sets and a pre-trained student are
resolved first, and both directories must hold no run of another config (or `overwrite`). With
`overwrite`, each of the two runs is deleted and started again only if it holds a run of a
different config: an adaptation of the same config is kept (the expensive step is not redone).
"""

import copy
import json
import os

import jax
import ml_collections
from absl import logging

from kdjax import errors, files, validate
from kdjax.data import sources
from kdjax.hf import hub
from kdjax.train import trainer
from kdjax.train import workdir as workdir_lib

TEACHER_DIR = "teacher"  # WORKDIR/teacher: the adapted teacher's run directory
RECORD = "adapt.json"  # WORKDIR/adapt.json: where the distillation's teacher came from
FINISHED = "cost.json"  # the trainer writes it last: a run directory holding it is finished
_HUB_HINT = (" (teacher.adapt.model.pretrained; to distil from a teacher adapted already, pass "
             "its directory instead: the config's argument teacher_dir=DIR, no adaptation)")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> trainer.Result:
  """The trainer on `config` in `workdir`; with `teacher.adapt` set, the teacher's adaptation
  into WORKDIR/teacher first (see the module docstring). Returns the distillation's Result."""
  if not validate.adapting(config):
    return trainer.train_and_evaluate(config, workdir, overwrite)
  teacher_dir = os.path.join(workdir, TEACHER_DIR)
  distil = distillation_config(config, teacher_dir)
  run = adaptation_config(config)
  validate.check(distil)  # both configs (teacher.adapt is checked with it), nothing read yet
  validate.partial_labels(distil)
  finished = check_before_writing(distil, run, workdir, teacher_dir, overwrite)
  if finished:
    logging.info("adapted teacher %s: finished already, not trained again", teacher_dir)
  else:
    logging.info("adapting teacher %s into %s", run.model.pretrained, teacher_dir)
    trainer.train_and_evaluate(run, teacher_dir, overwrite)
  write_record(workdir, teacher_dir, run)
  logging.info("distilling from %s", teacher_dir)
  return trainer.train_and_evaluate(distil, workdir, overwrite)


def distillation_config(config, teacher_dir: str) -> ml_collections.ConfigDict:
  """`config` (a copy) with the adapted teacher's run directory as its teacher."""
  distil = copy.deepcopy(config)
  distil.teacher.models = teacher_dir
  return distil


def adaptation_config(config) -> ml_collections.ConfigDict:
  """The adaptation run's config: teacher.adapt (a copy), reading the student's data.data_dir
  when its own is empty."""
  run = copy.deepcopy(config.teacher.adapt)
  if not run.data.data_dir:
    run.data.data_dir = config.data.data_dir
  return run


def check_before_writing(distil, run, workdir: str, teacher_dir: str, overwrite: bool) -> bool:
  """Refuses, before anything is written, a missing input of either run (the Hub teacher, the
  data, a pre-trained student) or a directory holding a run of another config (unless
  `overwrite`). Returns whether the adaptation has finished already."""
  hub.fetch_once(run.model.pretrained, local_hint=_HUB_HINT)
  for source in (distil.model.pretrained, distil.model.hub_config):
    if source:
      hub.fetch_once(source)
  _open_data([run.data, distil.data])
  why = {d: workdir_lib.refusal(c, d, ignore=_derived(c))
         for d, c in ((teacher_dir, run), (workdir, distil))}
  for reason in why.values():
    if reason and not overwrite:
      raise errors.UserError(reason + workdir_lib.REFUSAL_FIX)
  return why[teacher_dir] is None and os.path.isfile(os.path.join(teacher_dir, FINISHED))


def _derived(config) -> tuple:
  """Keys the trainer derives before writing config.json: a pre-trained model's normalisation
  (data.normalization=auto) comes from its checkpoint, named by model.pretrained."""
  if config.model.pretrained and config.data.normalization == "auto":
    return ("data.mean", "data.std")
  return ()


def _open_data(data_cfgs) -> None:
  """Opens every split and synthetic set the runs read (reads no image): a missing dataset is
  refused with the command that prepares it."""
  opened = set()
  for d in data_cfgs:
    for split in filter(None, (d.train_split, d.test_split)):
      if (d.name, d.data_dir, split) not in opened:
        sources.open_source(d, split)
        opened.add((d.name, d.data_dir, split))
    for directory in filter(None, (s.strip() for s in d.synthetic.split(","))):
      sources.open_synthetic(directory, d, sources.open_source(d, d.train_split))


def write_record(workdir: str, teacher_dir: str, run) -> None:
  """WORKDIR/adapt.json: the adapted teacher's source, run directory, last step and final
  evaluation (process 0)."""
  if jax.process_index() != 0:
    return
  source_path = os.path.join(teacher_dir, "pretrained.json")
  ckpts = os.path.join(teacher_dir, "checkpoints")
  record = {
      "teacher_dir": os.path.abspath(teacher_dir),
      "source": (files.read_json(source_path) if os.path.isfile(source_path)
                 else {"source": run.model.pretrained}),
      "mode": "probe" if run.model.freeze_backbone else "finetune",
      "step": max((int(n) for n in os.listdir(ckpts) if n.isdigit()), default=None),
      "final": final_evaluation(teacher_dir),
  }
  files.write_json(os.path.join(workdir, RECORD), record)


def final_evaluation(run_dir: str) -> dict:
  """The last evaluation row of a run's metrics.jsonl ({} if none)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  final = {}
  if os.path.isfile(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
          continue
        if "test/accuracy" in row or "val/accuracy" in row:
          final = {k: v for k, v in row.items()
                   if k == "step" or k.startswith(("test/", "val/"))}
  return final
