"""The one kdjax trainer: mesh -> input -> model -> teachers -> workdir -> state -> steps ->
checkpoint -> loop -> reports.

Every student objective plugs into this file through steps.py and kdjax/distill/; there is no
second trainer. Parallelism is `jax.jit` with `NamedSharding` on one data-axis `Mesh`
(sharding.py): the global batch is sharded, the state replicated, the state buffer donated. The
same code runs on 1 CPU, N fake CPU devices, a GPU, a TPU pod slice or several processes under
`jax.distributed`. Nothing is written into the workdir until every input (data, model, teachers)
has loaded and the workdir is known to hold no run of another config.
"""

import copy
import dataclasses
import functools
import os

import jax
import ml_collections
from absl import logging

from kdjax import checkpoint, files, optim, preemption, steps, validate
from kdjax import sharding as shd
from kdjax.data import pipeline
from kdjax.distill import btuning, objective, reports, teacher_cache, teachers
from kdjax.evaluators import classification
from kdjax.hf import hub, preprocessing, pretrained
from kdjax.metric_writers import MetricWriter, Progress
from kdjax.train import accounting, loop
from kdjax.train import workdir as workdir_lib


@dataclasses.dataclass
class Result:
  state: steps.TrainState
  metrics: dict  # final evaluation metrics and the run's cost record


@dataclasses.dataclass
class Model:
  """The student, its optimizer and the frozen variables the step reads but never trains."""

  module: object
  tx: object
  learning_rate: object
  pretrained: dict | None  # pre-trained variables, placed (None: random init)
  frozen: dict  # a probe's backbone ({} otherwise)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> Result:
  validate.check(config)  # bad names and values: one message, before anything is read
  partial_labels = validate.partial_labels(config)  # unlabelled rows that nothing would use
  with preemption.Guard() as guard:  # SIGTERM from here on: save, then stop (errors.Preempted)
    return _train_and_evaluate(config, workdir, overwrite, partial_labels, guard)


def _train_and_evaluate(config, workdir, overwrite, partial_labels, guard) -> Result:
  init_key, aug_key, dropout_key = (jax.random.fold_in(jax.random.key(config.seed), i)
                                    for i in range(3))
  # ---------------------------------------------------------------- Mesh
  mesh = shd.make_mesh()
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  logging.info("mesh: %d devices (%s), %d processes", mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())
  # ---------------------------------------------------------------- Input
  config, pretrained_dir = _resolve_pretrained(config)
  data = pipeline.build(config.data, mesh, config.seed, config.batch_size,
                        config.eval_batch_size)
  steps_per_epoch = data.train.steps_per_epoch
  total_steps = optim.steps_from(config, "total", steps_per_epoch)
  logging.info("data %s: %d train examples (%d steps/epoch), eval sets %s, %d classes",
               config.data.name, data.train.num_examples, steps_per_epoch,
               {k: v.num_examples for k, v in data.evals.items()}, data.num_classes)
  # ---------------------------------------------------------------- Model and optimizer
  model = _build_model(config, data.num_classes, pretrained_dir, mesh, total_steps,
                       steps_per_epoch)
  image_shape = (config.data.image_size, config.data.image_size, 3)
  # ---------------------------------------------------------------- Teachers
  teach = teachers.setup(config, model.module, image_shape, data.num_classes, mesh, init_key,
                         train_labels=data.train.labels)
  distiller = teach.distiller
  # ---------------------------------------------------------------- Workdir: this run's only
  workdir_lib.claim(config, workdir, overwrite)  # first write: refuses another config's run
  workdir_lib.write_provenance(config, workdir, teach.records, pretrained_dir)
  cache, cache_cost = _attach_cache(config, workdir, data, teach, mesh)
  online_vars = teach.variables if distiller is not None and not distiller.cached else []
  # ---------------------------------------------------------------- State, shape first
  state, abstract_state = _init_state(config, model, image_shape, distiller, repl, init_key)
  if distiller is not None and "btuning" in distiller.weights:  # LogME, once before training
    state = btuning.fit(distiller, state, _eval_variables(model, state), functools.partial(
        _student_features, model.module), data, config.data, teach.variables, mesh,
        config.eval_batch_size)
  state_sh = jax.tree.map(lambda _: repl, abstract_state)
  # ---------------------------------------------------------------- Steps
  make_step = functools.partial(_make_train_step, config, model, data.num_classes,
                                partial_labels, steps_per_epoch, (state_sh, batch_sh, repl,
                                                                  shd.sharding_of(model.frozen)),
                                repl)
  train_step = make_step(distiller, online_vars)
  abstract = functools.partial(accounting.abstract_batch, image_shape=image_shape,
                               sharding=batch_sh)
  evaluator = _make_evaluator(config, model, data, state_sh, batch_sh, repl, teach, abstract)
  # ---------------------------------------------------------------- Checkpoint and resume
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.max_to_keep)
  state, start_step, cost = _restore(ckpt, state, abstract_state, state_sh, steps_per_epoch)
  workdir_lib.truncate_metrics(workdir, start_step)  # rows after that checkpoint: logged again
  # ---------------------------------------------------------------- Cost (XLA's count)
  acct = accounting.Accounting(cost)
  batch = abstract(config.batch_size, cache_arrays=cache.arrays if cache else None)
  acct.count_train_step(train_step, (state, batch, dropout_key, model.frozen, online_vars),
                        config.batch_size)
  if cache is not None:  # what the same step would cost with the teachers run online
    acct.count_cache(lambda d: make_step(d, teach.variables), distiller, (
        state, abstract(config.batch_size), dropout_key, model.frozen, teach.variables),
        cache_cost)
  # ---------------------------------------------------------------- Loop
  hooks = _Hooks(data, model, train_step, evaluator, ckpt, acct, MetricWriter(workdir),
                 Progress(total_steps, config.batch_size, start_step), aug_key, dropout_key,
                 online_vars, steps_per_epoch)
  train_loop = loop.Loop(
      total_steps, start_step, config.log_every_steps,
      optim.steps_from(config, "eval_every", steps_per_epoch, default=0),
      config.checkpoint_every_steps, ckpt.directory,
      last_saved=start_step if start_step else None, terms=objective.TERMS)
  try:
    state, final_metrics = train_loop.run(
        state, hooks.step, log=hooks.log, evaluate=hooks.evaluate, save=hooks.save,
        should_stop=guard.should_stop, stop_requested=preemption.requested, wait=ckpt.wait)
    if start_step >= total_steps:  # already finished: evaluate the restored state again
      final_metrics = evaluator(total_steps, _eval_variables(model, state), acct.add_eval)
    cost_metrics = {f"cost/{k}": v for k, v in acct.final(total_steps).items()}
    if start_step < total_steps:
      hooks.writer.write(total_steps, cost_metrics)
    final_metrics.update(cost_metrics)
  finally:  # also on errors: in-flight saves of good steps complete; nothing after them is saved
    hooks.writer.close()
    ckpt.close()
  # ---------------------------------------------------------------- Reports
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, "cost.json"), acct.cost)
  reports.write(workdir, state.aux, distiller)
  return Result(state=state, metrics=final_metrics)


@dataclasses.dataclass
class _Hooks:
  """What the loop (kdjax.train.loop.Loop.run) does at each step, log, evaluation and save."""

  data: object
  model: Model
  train_step: object
  evaluator: classification.Evaluator
  ckpt: checkpoint.Checkpointer
  acct: accounting.Accounting
  writer: MetricWriter
  progress: Progress
  aug_key: jax.Array
  dropout_key: jax.Array
  online_vars: list  # the online teachers' variables ([] when cached or none)
  steps_per_epoch: int

  def step(self, state, step):
    batch = self.data.train.batch(step - 1, jax.random.fold_in(self.aug_key, step - 1))
    return self.train_step(state, batch, self.dropout_key, self.model.frozen, self.online_vars)

  def log(self, step, means):
    means = {f"train/{k}": v for k, v in means.items()}
    speed = self.progress.report(step, means)
    means["train/learning_rate"] = float(self.model.learning_rate(step - 1))
    self.writer.write(step, {**means, **speed, "epoch": step / self.steps_per_epoch})

  def evaluate(self, step, state):
    metrics = self.evaluator(step, _eval_variables(self.model, state), self.acct.add_eval)
    self.writer.write(step, metrics)
    return metrics

  def save(self, step, state):
    epoch, batch_in_epoch = divmod(step, self.steps_per_epoch)
    self.ckpt.save(step, state, {"step": step, "cost": self.acct.record(step),
                                 "data_position": {"epoch": epoch,
                                                   "batch_in_epoch": batch_in_epoch}})


def _resolve_pretrained(config):
  """(config, directory of model.pretrained / hub_config or None): resolved once (process 0
  downloads first). With data.normalization="auto" a pre-trained student normalises like its
  checkpoint: the returned config (a copy; the caller's is not changed) holds that mean/std, so
  the run's config.json records them."""
  source = config.model.pretrained or config.model.hub_config
  directory = hub.fetch_once(source) if source else None
  if config.model.pretrained and config.data.normalization == "auto":
    pre = preprocessing.preprocessing_of(str(directory))
    config = copy.deepcopy(config)
    config.data.mean, config.data.std = tuple(pre.mean), tuple(pre.std)
    logging.info("normalising like %s: mean %s std %s", config.model.pretrained,
                 config.data.mean, config.data.std)
  return config, directory


def _build_model(config, num_classes, pretrained_dir, mesh, total_steps, steps_per_epoch):
  module, variables = pretrained.build_model(config.model, num_classes, pretrained_dir)
  frozen = {}
  if variables is not None:
    variables = shd.put_global(variables, shd.param_shardings(
        variables, mesh, config.model.param_sharding if config.model.freeze_backbone
        else "replicate", config.model.fsdp_min_size))
    if config.model.freeze_backbone:
      frozen = variables
  learning_rate = optim.schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = optim.build(config.optimizer, learning_rate, config.loss.prior_learning_rate)
  return Model(module, tx, learning_rate, variables, frozen)


def _attach_cache(config, workdir, data, teach, mesh):
  """The teacher cache of a cached-teacher run, built (or resumed) and attached to the train
  input; (None, None) otherwise."""
  if teach.distiller is None or not teach.distiller.cached:
    return None, None
  cache, cost = teacher_cache.build(config, workdir, data.train, teach.distiller, teach.variables,
                                    teach.records, mesh)
  data.train.attach_cache(cache)
  logging.info("teacher cache: %d views per image, made in %.1fs (%.3g FLOPs)",
               cache.num_views, cost["wall_time_s"], cost["flops"])
  return cache, cost


def _init_state(config, model, image_shape, distiller, repl, key):
  """(the initial state, replicated on the mesh; its abstract shape). The pre-trained variables
  go into the state (fine-tune) or stay in `model.frozen` (probe)."""
  init = functools.partial(steps.create_train_state, model.module, model.tx, image_shape,
                           frozen=config.model.freeze_backbone, distiller=distiller)
  abstract_state = jax.eval_shape(init, key, model.pretrained)
  state = jax.jit(init, out_shardings=jax.tree.map(lambda _: repl, abstract_state))(
      key, model.pretrained)
  model.pretrained = None
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  num_frozen = sum(x.size for x in jax.tree.leaves(model.frozen))
  logging.info("model %s%s: %s trained parameters, %s frozen", config.model.name,
               f" from {config.model.pretrained}" if config.model.pretrained else "",
               f"{num_params:,}", f"{num_frozen:,}")
  return state, abstract_state


def _make_train_step(config, model, num_classes, partial_labels, steps_per_epoch, shardings,
                     repl, distiller, teacher_vars):
  """The jitted train step for `distiller` with the online teachers `teacher_vars` ([] when
  cached or none); `shardings`: (state, batch, key, frozen)."""
  warmup = {term: int(round(epochs * steps_per_epoch))
            for term, epochs in config.loss.warmup_epochs.items()}
  return jax.jit(
      steps.make_train_step(model.module, model.tx, config.loss, num_classes, distiller,
                            partial_labels, warmup),
      in_shardings=(*shardings, shd.sharding_of(teacher_vars)),
      out_shardings=(shardings[0], repl), donate_argnums=0)


def _student_features(module, variables, images):
  """The student's pre-logits features in eval mode."""
  return module.apply(variables, images, train=False)[1]["pre_logits"]


def _eval_variables(model, state):
  """What the eval step reads: the frozen part goes in as an argument, never as a constant."""
  return steps.merge(model.frozen, state.params, state.batch_stats)


def _make_evaluator(config, model, data, state_sh, batch_sh, repl, teach, abstract):
  distiller = teach.distiller
  with_teacher = distiller is not None and distiller.kd_teachers and config.teacher.evaluate
  return classification.Evaluator(
      lambda variables, images: model.module.apply(variables, images, train=False)[0],
      data.evals, data.num_classes,
      steps.merge(shd.sharding_of(model.frozen), state_sh.params, state_sh.batch_stats),
      batch_sh, repl, config.eval_batch_size, abstract,
      teacher_predict=distiller.teacher_probabilities if with_teacher else None,
      teacher_vars=teach.variables, teacher_sharding=shd.sharding_of(teach.variables))


def _restore(ckpt, state, abstract_state, state_sh, steps_per_epoch):
  """(state, start step, cost record): the latest checkpoint's, or the fresh state's."""
  restored = ckpt.restore_latest(checkpoint.abstract_like(abstract_state, state_sh))
  if restored is None:
    return state, 0, None
  state, meta = restored
  step = int(meta["step"])
  logging.info("resumed from step %d (data position: epoch %d, batch %d)", step,
               *divmod(step, steps_per_epoch))
  return state, step, meta["cost"]
