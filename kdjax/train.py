"""The one kdjax trainer: mesh -> input -> model -> state -> steps -> checkpoint -> loop.

Every student objective plugs into this file through `steps.py`; there is no second trainer.
Parallelism is `jax.jit` with `NamedSharding` on one data-axis `Mesh` (see sharding.py): the
global batch is sharded, the state replicated, the state buffer donated. The same code runs on
1 CPU, N fake CPU devices, a GPU, a TPU pod slice or several processes under `jax.distributed`.
"""

import copy
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kdjax import (
  checkpoint,
  configlib,
  distill,
  errors,
  models,
  optim,
  preemption,
  steps,
  teacher_cache,
  teachers,
)
from kdjax import sharding as shd
from kdjax.data import pipeline
from kdjax.evaluators import classification
from kdjax.metric_writers import MetricWriter, Progress


@dataclasses.dataclass
class Result:
  state: steps.TrainState
  metrics: dict  # final evaluation metrics and the run's cost record


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> Result:
  configlib.validate(config)  # bad names and values: one message, before anything is read
  partial_labels = _partial_labels(config)  # refuses unlabelled rows that nothing would use
  with preemption.Guard() as guard:  # SIGTERM from here on: save, then stop (errors.Preempted)
    return _train_and_evaluate(config, workdir, overwrite, partial_labels, guard)


def _train_and_evaluate(config, workdir, overwrite, partial_labels, guard) -> Result:
  """Nothing is written into `workdir` until every input (data, model, teachers) has loaded
  and the workdir is known to hold no run of another config."""
  root_key = jax.random.key(config.seed)
  init_key, aug_key, dropout_key = (jax.random.fold_in(root_key, i) for i in range(3))

  # ---------------------------------------------------------------- Mesh
  mesh = shd.make_mesh()
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  logging.info("mesh: %d devices (%s), %d processes", mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())

  # ---------------------------------------------------------------- Input
  pretrained_dir = None  # the directory model.pretrained (or hub_config) names, resolved once
  if config.model.pretrained or config.model.hub_config:  # process 0 downloads first
    pretrained_dir = teachers.fetch_once(config.model.pretrained or config.model.hub_config)
  if config.model.pretrained and config.data.normalization == "auto":
    pre = teachers.preprocessing_of(str(pretrained_dir))
    config.data.mean, config.data.std = tuple(pre.mean), tuple(pre.std)
    logging.info("normalising like %s: mean %s std %s", config.model.pretrained,
                 config.data.mean, config.data.std)
  data = pipeline.build(config.data, mesh, config.seed, config.batch_size,
                        config.eval_batch_size)
  steps_per_epoch = data.train.steps_per_epoch
  total_steps = optim.steps_from(config, "total", steps_per_epoch)
  eval_every = optim.steps_from(config, "eval_every", steps_per_epoch, default=0)
  logging.info("data %s: %d train examples (%d steps/epoch), eval sets %s, %d classes",
               config.data.name, data.train.num_examples, steps_per_epoch,
               {k: v.num_examples for k, v in data.evals.items()}, data.num_classes)

  # ---------------------------------------------------------------- Model and optimizer
  model, pretrained = models.build(config.model, data.num_classes, pretrained_dir)
  frozen = {}  # variables the step reads but never trains or checkpoints (a probe's backbone)
  if pretrained is not None:
    pretrained = shd.put_global(pretrained, shd.param_shardings(
        pretrained, mesh, config.model.param_sharding if config.model.freeze_backbone
        else "replicate", config.model.fsdp_min_size))
    if config.model.freeze_backbone:
      frozen = pretrained
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  learning_rate = optim.schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = optim.build(config.optimizer, learning_rate, config.loss.prior_learning_rate)
  image_shape = (config.data.image_size, config.data.image_size, 3)

  # ---------------------------------------------------------------- Teachers
  teacher_list, teacher_records = _load_teachers(config)
  distiller, teacher_vars = None, []
  if teacher_list or distill.needs_teacher(config.loss):
    student_out = jax.eval_shape(
        lambda k: model.init_with_output(k, jnp.zeros((2,) + image_shape), train=False)[0],
        init_key)[1]
    distiller = distill.Distiller(
        config.loss, [distill.view_of(t, v) for t, v in zip(
            teacher_list, distill.parse_views(config.teacher.views, len(teacher_list)))],
        data.num_classes,
        int(student_out["pre_logits"].shape[-1]), config.data.mean, config.data.std,
        cached=config.teacher.mode == "cached")
    teacher_vars = [shd.put_global(t.variables, shd.param_shardings(
        t.variables, mesh, config.teacher.param_sharding, config.teacher.fsdp_min_size))
        for t in teacher_list]
    logging.info("teachers (%s): %s; loss weights %s", config.teacher.mode,
                 [f"{v.name} ({v.num_features} features, head: {v.num_logits})"
                  for v in distiller.views], distiller.weights)
  teacher_sh = jax.tree.map(lambda x: x.sharding, teacher_vars)

  # ---------------------------------------------------------------- Workdir: this run's only
  _claim_workdir(config, workdir, overwrite)  # first write: refuses another config's run
  if jax.process_index() == 0:
    if teacher_records:  # the exact teachers (source, revision / run step, weights' sha1)
      _write_json(os.path.join(workdir, "teachers.json"), teacher_records)
    if config.model.pretrained:  # the exact weights (Hub commit / absolute path) it started from
      _write_json(os.path.join(workdir, "pretrained.json"),
                  teachers.source_record(config.model.pretrained, pretrained_dir))
    if pretrained_dir is not None:  # a Hub architecture: its config, for kdjax.export
      _write_json(os.path.join(workdir, "hf_config.json"),
                  teachers.read_config(pretrained_dir, str(pretrained_dir)))
  cache, cache_cost = None, None
  if distiller is not None and distiller.cached:
    cache, cache_cost = teacher_cache.build(config, workdir, data.train, distiller,
                                            teacher_vars, teacher_records, mesh)
    data.train.attach_cache(cache)
    logging.info("teacher cache: %d views per image, made in %.1fs (%.3g FLOPs)",
                 cache.num_views, cache_cost["wall_time_s"], cache_cost["flops"])
  # what the train step receives: the online teachers' variables ([] when cached or none)
  step_teacher_vars = teacher_vars if distiller is not None and not distiller.cached else []
  step_teacher_sh = jax.tree.map(lambda x: x.sharding, step_teacher_vars)

  # ---------------------------------------------------------------- State, shape first
  init = functools.partial(steps.create_train_state, model, tx, image_shape,
                           frozen=config.model.freeze_backbone, distiller=distiller)
  abstract_state = jax.eval_shape(init, init_key, pretrained)
  state_sh = jax.tree.map(lambda _: repl, abstract_state)
  state = jax.jit(init, out_shardings=state_sh)(init_key, pretrained)
  del pretrained  # now inside the state (fine-tune) or in `frozen` (probe)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  num_frozen = sum(x.size for x in jax.tree.leaves(frozen))
  logging.info("model %s%s: %s trained parameters, %s frozen", config.model.name,
               f" from {config.model.pretrained}" if config.model.pretrained else "",
               f"{num_params:,}", f"{num_frozen:,}")

  # ---------------------------------------------------------------- Steps
  train_step = jax.jit(
      steps.make_train_step(model, tx, config.loss, data.num_classes, distiller,
                            partial_labels),
      in_shardings=(state_sh, batch_sh, repl, frozen_sh, step_teacher_sh),
      out_shardings=(state_sh, repl), donate_argnums=0)

  def predict(variables, images):
    return model.apply(variables, images, train=False)[0]

  def eval_variables(state):  # the frozen part goes in as an argument, never as a constant
    return steps.merge(frozen, state.params, state.batch_stats)

  eval_step = jax.jit(steps.make_eval_step(predict, data.num_classes),
                      in_shardings=(steps.merge(frozen_sh, state_sh.params,
                                                state_sh.batch_stats), batch_sh),
                      out_shardings=repl)

  # ---------------------------------------------------------------- Checkpoint and resume
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.max_to_keep)
  cost = {"wall_time_s": 0.0, "train_flops": 0.0, "eval_flops": 0.0}
  start_step = 0
  restored = ckpt.restore_latest(checkpoint.abstract_like(abstract_state, state_sh))
  if restored is not None:
    state, meta = restored
    start_step, cost = int(meta["step"]), meta["cost"]
    logging.info("resumed from step %d (data position: epoch %d, batch %d)", start_step,
                 *divmod(start_step, steps_per_epoch))
  if jax.process_index() == 0:  # rows logged after that checkpoint are logged again below
    _truncate_metrics(workdir, start_step)

  # ---------------------------------------------------------------- Cost (XLA's count)
  def abstract_batch(size, with_mask=False, cached=cache is not None):
    batch = {"image": jax.ShapeDtypeStruct((size,) + image_shape, np.float32, sharding=batch_sh),
             "label": jax.ShapeDtypeStruct((size,), np.int32, sharding=batch_sh)}
    if with_mask:
      batch["mask"] = jax.ShapeDtypeStruct((size,), np.float32, sharding=batch_sh)
    for k, v in (cache.arrays.items() if cached else ()):
      batch[k] = jax.ShapeDtypeStruct((size,) + v.shape[2:], np.float32, sharding=batch_sh)
    return batch

  flops_per_step = steps.xla_flops(train_step, state, abstract_batch(config.batch_size),
                                   dropout_key, frozen, step_teacher_vars)
  if cache is not None:  # what the same step would cost with the teachers run online
    online = copy.copy(distiller)
    online.cached = False
    online_step = jax.jit(steps.make_train_step(model, tx, config.loss, data.num_classes,
                                                online, partial_labels))
    cost["online_teacher_flops_per_train_step"] = steps.xla_flops(
        online_step, state, abstract_batch(config.batch_size, cached=False), dropout_key,
        frozen, teacher_vars)
    cost["teacher_cache_flops"] = cache_cost["flops"]
    cost["teacher_cache_wall_time_s"] = cache_cost["wall_time_s"]
    logging.info("cached teachers: %.3g FLOPs per step instead of %.3g online", flops_per_step,
                 cost["online_teacher_flops_per_train_step"])
  eval_flops_per_batch = steps.xla_flops(eval_step, eval_variables(state),
                                         abstract_batch(config.eval_batch_size, with_mask=True))
  logging.info("XLA cost analysis: %.3g FLOPs per train step (global batch %d)",
               flops_per_step, config.batch_size)

  # ---------------------------------------------------------------- Evaluation
  teacher_preds = {}  # eval set -> the teachers' predictions (frozen: computed once per run)
  predict_teacher = None
  if distiller is not None and distiller.kd_teachers and config.teacher.evaluate:
    predict_teacher = jax.jit(distiller.teacher_predictions,
                              in_shardings=(teacher_sh, batch_sh), out_shardings=batch_sh)

  def run_evals(step):
    variables = eval_variables(state)
    out = {}
    for name, ev in data.evals.items():
      if predict_teacher is not None and name not in teacher_preds:
        teacher_preds[name] = classification.teacher_predictions(predict_teacher, teacher_vars,
                                                                 ev)
        cost["eval_flops"] += ev.num_batches * steps.xla_flops(
            predict_teacher, teacher_vars, abstract_batch(config.eval_batch_size)["image"])
      for k, v in classification.evaluate(eval_step, variables, ev,
                                          teacher_preds.get(name)).items():
        out[f"{name}/{k}"] = v
      cost["eval_flops"] += eval_flops_per_batch * ev.num_batches
    logging.info("eval at step %d: %s", step, out)
    return out

  # ---------------------------------------------------------------- Loop
  writer = MetricWriter(workdir)
  progress = Progress(total_steps, config.batch_size, start_step)
  t_start, wall_before = time.perf_counter(), cost["wall_time_s"]
  pending = []  # (step, metrics on the device) since the last log

  def record_cost(step):
    cost["wall_time_s"] = wall_before + time.perf_counter() - t_start
    cost["train_flops"] = flops_per_step * step
    cost["flops_per_train_step"] = flops_per_step

  last_saved = start_step if restored is not None else None

  def save(step):
    nonlocal last_saved
    check_pending()  # a checkpoint never holds the result of a non-finite step
    record_cost(step)
    ckpt.save(step, state, {"step": step, "cost": cost,
                            "data_position": {"epoch": step // steps_per_epoch,
                                              "batch_in_epoch": step % steps_per_epoch}})
    last_saved = step

  def check_pending() -> list:
    """Every step since the last check: the first non-finite loss term stops the run. Returns
    the steps' metrics on the host."""
    values = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, values):
      _check_finite(step, m, last_saved, ckpt.directory)
    return values

  final_metrics = {}
  try:
    if preemption.requested():  # SIGTERM during set-up: nothing new to save
      raise errors.Preempted(
          f"preempted before training step {start_step + 1}: nothing new to save "
          f"({'checkpoint step ' + str(last_saved) if last_saved is not None else 'no checkpoint'}"
          f" in {ckpt.directory}); run the same command again to resume")
    for step in range(start_step + 1, total_steps + 1):
      batch = data.train.batch(step - 1, jax.random.fold_in(aug_key, step - 1))
      state, metrics = train_step(state, batch, dropout_key, frozen, step_teacher_vars)
      pending.append((step, metrics))
      if step % config.log_every_steps == 0 or step == total_steps:
        means = {f"train/{k}": float(np.mean(v)) for k, v in
                 jax.tree.map(lambda *x: np.stack(x), *check_pending()).items()
                 if k != steps.STATE_FINITE}
        pending = []
        speed = progress.report(step, means)
        means["train/learning_rate"] = float(learning_rate(step - 1))
        writer.write(step, {**means, **speed, "epoch": step / steps_per_epoch})
      is_last = step == total_steps
      if is_last or (eval_every and step % eval_every == 0):
        final_metrics = run_evals(step)
        writer.write(step, final_metrics)
      if is_last or step % config.checkpoint_every_steps == 0:
        save(step)
      if _THROTTLE_S:
        time.sleep(_THROTTLE_S)
      if not is_last and guard.should_stop(step):
        logging.warning("stop requested (SIGTERM): saving step %d and stopping", step)
        if last_saved != step:
          save(step)
        ckpt.wait()
        raise errors.Preempted(f"preempted: saved a checkpoint at step {step} in "
                               f"{ckpt.directory}; run the same command again to resume")

    trained = start_step < total_steps
    if not trained:  # already finished: evaluate the restored state again (not logged again)
      final_metrics = run_evals(total_steps)
    record_cost(total_steps)
    cost["total_flops"] = cost["train_flops"] + cost["eval_flops"]
    cost_metrics = {f"cost/{k}": v for k, v in cost.items()}
    if trained:
      writer.write(total_steps, cost_metrics)
    final_metrics.update(cost_metrics)
  finally:  # also on errors: in-flight saves of good steps complete; nothing after them is saved
    writer.close()
    ckpt.close()
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "cost.json"), cost)
    if "rho" in state.aux:  # AFT: which teacher features the student was asked to keep
      rho = np.asarray(jax.device_get(distill.rho_weights(state.aux["rho"])), np.float64)
      report = distiller.rho_report(rho)
      _write_json(os.path.join(workdir, "rho.json"), report)
      np.save(os.path.join(workdir, "rho.npy"), rho)
      logging.info("AFT rho: %s", [(t["teacher"], round(t["mean"], 3),
                                   t["fraction_above_0.5"]) for t in report["teachers"]])
  return Result(state=state, metrics=final_metrics)


def _load_teachers(config) -> tuple[list, list]:
  """The teachers of `teacher.models` (host arrays; the trainer places them) and, for each, a
  record of exactly which weights were used (Hub commit, directory, run checkpoint step)."""
  names = configlib.teacher_names(config)
  loaded, records = [], []
  for name in names:
    directory = teachers.fetch_once(name)  # process 0 downloads first
    loaded.append(teachers.load(str(directory), dtype=config.teacher.dtype,
                                conv_impl=config.model.conv_impl, on_host=True))
    record = teachers.source_record(name, directory)
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


def _partial_labels(config) -> bool:
  """Whether some training rows are unlabelled (label -1: synthetic images with
  data.synthetic_labels=False, or data.unlabelled_rest); only distillation terms can use those,
  so a run without any is refused here, before anything is read or compiled."""
  d = config.data
  unlabelled_synthetic = bool(d.synthetic) and not d.synthetic_labels
  if unlabelled_synthetic and not distill.needs_teacher(config.loss):
    raise errors.UserError(
        "data.synthetic_labels=False leaves the synthetic images unlabelled, so only "
        "distillation terms can use them: set a loss.*_weight (kd, align, unif, aft, "
        "feature_kd) and teacher.models, or data.synthetic_labels=True")
  if d.unlabelled_rest and not distill.needs_teacher(config.loss):
    raise errors.UserError(
        "data.unlabelled_rest=True adds unlabelled images, so only distillation terms can use "
        "them: set a loss.*_weight (kd, align, unif, aft, feature_kd) and teacher.models, or "
        "data.unlabelled_rest=False")
  return unlabelled_synthetic or bool(d.unlabelled_rest)


def _check_finite(step: int, metrics: dict, last_saved, ckpt_dir: str) -> None:
  kept = (f"the last good checkpoint, step {last_saved} in {ckpt_dir}, is kept"
          if last_saved is not None else "no checkpoint was saved")
  fix = ("lower optimizer.learning_rate or that term's loss.*_weight (in a new --workdir, or with "
         "--overwrite), or check the data")
  bad = {k: float(v) for k, v in metrics.items()
         if k != steps.STATE_FINITE and not np.isfinite(v)}
  if bad:
    terms = [k for k in bad if k in distill.TERMS] or [k for k in bad if k == "loss"] or list(bad)
    what = ", ".join(f"{k} = {bad[k]}" for k in terms)
    raise errors.NonFiniteLoss(
        f"non-finite loss at step {step}: {what} (loss term{'s' if len(terms) > 1 else ''} "
        f"{terms}); stopped before checkpointing it, {kept}: {fix}")
  if metrics.get(steps.STATE_FINITE, 1.0) != 1.0:
    raise errors.NonFiniteLoss(
        f"non-finite parameters after step {step}: its loss and gradient were finite but the "
        f"update overflowed; stopped before checkpointing it, {kept}: {fix}")


# Test hook: seconds to sleep after every step, so a test can signal a run part-way.
_THROTTLE_S = float(os.environ.get("KDJAX_TRAIN_THROTTLE_S", "0") or 0)


def _write_text(path: str, text: str) -> None:
  """Atomically: a reader (or a killed writer) never sees half a file."""
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
  _write_text(path, json.dumps(obj, indent=2))


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
# cache is kept: its own record says what it was made from, and a different one is refused).
RUN_FILES = ("checkpoints", checkpoint.DAMAGED_DIR, "metrics.jsonl", "tensorboard",
             "config.json", "cost.json", "teachers.json", "pretrained.json", "hf_config.json",
             "rho.json", "rho.npy")


def _claim_workdir(config, workdir: str, overwrite: bool) -> None:
  """Makes `workdir` this config's run directory: new, or holding a run of the same config
  (resumed). Checkpoints of another config there are refused, unless `overwrite` deletes that
  run. Keys missing from an older run's config.json count as their default (keys added since)."""
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  has_checkpoints = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
  refusal = None
  if has_checkpoints and os.path.isfile(path):
    with open(path) as f:
      try:
        theirs = configlib.flatten(json.load(f))
      except json.JSONDecodeError:
        theirs = {"config.json": "unreadable"}
    mine = configlib.flatten(json.loads(config.to_json_best_effort()))
    default = configlib.flatten(json.loads(configlib.base().to_json_best_effort()))
    absent = object()
    diff = []
    for k in sorted(set(theirs) | set(mine)):
      a, b = theirs.get(k, absent), mine.get(k, absent)
      if a is absent and b == default.get(k, absent) or b is absent and a == default.get(k):
        continue  # a key added (or removed) since that run, at its default
      if a != b and k not in RESUMABLE_KEYS:
        diff.append((k, "<absent>" if a is absent else a, "<absent>" if b is absent else b))
    if diff:
      shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:4])
      refusal = (f"{workdir} holds a run of a different config ({shown}"
                 f"{'; ...' if len(diff) > 4 else ''})")
  elif has_checkpoints:
    refusal = f"{workdir} holds checkpoints but no config.json saying what made them"
  if refusal and not overwrite:
    raise errors.UserError(f"{refusal}: use another --workdir, or pass --overwrite to delete "
                           "that run and start again")
  if jax.process_index() == 0:
    if refusal:
      logging.warning("--overwrite: %s; deleting it", refusal)
      for name in RUN_FILES:
        target = os.path.join(workdir, name)
        if os.path.isdir(target) and not os.path.islink(target):
          shutil.rmtree(target)
        elif os.path.lexists(target):
          os.remove(target)
    os.makedirs(workdir, exist_ok=True)
    _write_text(path, config.to_json_best_effort(indent=2))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("kdjax workdir claimed")


def _truncate_metrics(workdir: str, start_step: int) -> None:
  """Drops metrics.jsonl rows of steps after `start_step` (logged by a run that was killed
  before checkpointing them; they are logged again as the steps are redone)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
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
    _write_text(path, "".join(keep))
