"""The teachers of `teacher.models`, loaded with a record of exactly which weights were used, and
placed on the mesh with the Distiller that runs them inside the train step."""

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kdjax import configlib
from kdjax import sharding as shd
from kdjax.distill import objective, teacher_views
from kdjax.hf import hub, pretrained


@dataclasses.dataclass
class Teachers:
  """What the trainer needs of its teachers (all empty for a run without any)."""

  distiller: objective.Distiller | None
  variables: list  # one variable tree per teacher, placed on the mesh
  records: list  # one provenance record per teacher (teachers.json)


def load(config) -> tuple[list, list]:
  """The teachers of `teacher.models` (host arrays; the caller places them) and, for each, a
  record of exactly which weights were used (Hub commit, directory, run checkpoint step, the
  weights' sha1)."""
  loaded, records = [], []
  for name in configlib.teacher_names(config):
    directory = hub.fetch_once(name)  # process 0 downloads first
    loaded.append(pretrained.load(str(directory), dtype=config.teacher.dtype,
                                  conv_impl=config.model.conv_impl, on_host=True))
    record = hub.source_record(name, directory)
    # the weights themselves: a directory re-saved, or a run trained on, is another teacher
    digest = hashlib.sha1()
    for leaf in jax.tree.leaves(loaded[-1].variables):
      digest.update(np.ascontiguousarray(leaf).tobytes())
    record["weights_sha1"] = digest.hexdigest()
    ckpts = directory / "checkpoints"
    if ckpts.is_dir():  # a kdjax run: which of its checkpoints
      record["step"] = max((int(p.name) for p in ckpts.iterdir() if p.name.isdigit()),
                           default=None)
    records.append(record)
  return loaded, records


def setup(config, model, image_shape, num_classes: int, mesh, key,
          train_labels=None) -> Teachers:
  """Loads the configured teachers, places them on `mesh` and builds the Distiller for the
  student `model` (its feature width from an abstract forward pass). `train_labels`: a callable
  giving every training row's label (read only when a term needs them: CRD)."""
  loaded, records = load(config)
  if not loaded and not objective.needs_teacher(config.loss):
    return Teachers(None, [], [])
  student_out = jax.eval_shape(
      lambda k: model.init_with_output(k, jnp.zeros((2,) + image_shape), train=False)[0],
      key)[1]
  views = [teacher_views.view_of(t, v) for t, v in zip(
      loaded, teacher_views.parse_views(config.teacher.views, len(loaded)))]
  needs_labels = "crd" in objective.weights(config.loss) and train_labels is not None
  distiller = objective.Distiller(
      config.loss, views, num_classes, int(student_out["pre_logits"].shape[-1]),
      config.data.mean, config.data.std, cached=config.teacher.mode == "cached",
      train_labels=train_labels() if needs_labels else None,
      teacher_heads=[objective.linear_head(t.variables, num_classes) for t in loaded])
  variables = [shd.put_global(t.variables, shd.param_shardings(
      t.variables, mesh, config.teacher.param_sharding, config.teacher.fsdp_min_size))
      for t in loaded]
  logging.info("teachers (%s): %s; loss weights %s", config.teacher.mode,
               [f"{v.name} ({v.num_features} features, head: {v.num_logits})"
                for v in distiller.views], distiller.weights)
  return Teachers(distiller, variables, records)
