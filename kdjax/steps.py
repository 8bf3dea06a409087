"""Pure train and eval steps: state in, state out. No I/O; jitted and sharded by the trainer
(kdjax/train/trainer.py).

Randomness is `fold_in(key, step)`: the dropout key of a step depends only on the run's seed
and the step number, never on how many steps ran in this process (so resume is exact).
Metrics come back as global means (train) or (sum, count) pairs (eval), exact under sharding
and padding.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any  # the student's
  batch_stats: Any
  opt_state: Any  # over {"model": params, "aux": aux} (optim.build)
  aux: Any = flax.struct.field(default_factory=dict)  # distillation heads, rho (distill/)
  # distillation state that is not trained: CRD's memory bank (kdjax/distill/objective.py)
  memory: Any = flax.struct.field(default_factory=dict)


def create_train_state(model, tx, image_shape, key, pretrained=None,
                       frozen: bool = False, distiller=None) -> TrainState:
  """Random init, overwritten by `pretrained` variables; `frozen` ones are left out of the state.

  Frozen variables (a linear probe's backbone) are passed to every step as an argument instead
  (`merge`): never optimised, never checkpointed. Their random init is dead code under jit.
  """
  variables = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  pretrained = pretrained or {}
  params = {**params, **pretrained.get("params", {})}
  batch_stats = {**batch_stats, **pretrained.get("batch_stats", {})}
  if frozen:
    params = {k: v for k, v in params.items() if k not in pretrained.get("params", {})}
    batch_stats = {k: v for k, v in batch_stats.items()
                   if k not in pretrained.get("batch_stats", {})}
  aux = distiller.init_aux(jax.random.fold_in(key, 1)) if distiller is not None else {}
  memory = distiller.init_memory(jax.random.fold_in(key, 2)) if distiller is not None else {}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init({"model": params, "aux": aux}), aux=aux, memory=memory)


def merge(frozen, params, batch_stats) -> dict:
  """Model variables from the frozen constants ({} for most students) and the trained state."""
  return {"params": {**frozen.get("params", {}), **params},
          "batch_stats": {**frozen.get("batch_stats", {}), **batch_stats}}


def xla_flops(jitted, *args) -> float:
  """Global FLOPs of one call, from XLA's cost analysis of the (unpartitioned) lowered HLO."""
  lowered = jitted.lower(*args)
  try:
    analysis = lowered.cost_analysis()
  except (AttributeError, NotImplementedError):  # not every jax/backend offers the HLO count
    analysis = lowered.compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # some jax versions return one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  """Per-example CE [B] with optional label smoothing."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_cross_entropy(logits, batch, num_classes: int, label_smoothing: float = 0.0):
  """Per-example CE [B] of a train batch; a mixup batch ("mix_weight" w, "label_mix": the
  partner's label, kdjax/data/pipeline.py) gives w CE(label) + (1 - w) CE(label_mix), an
  unlabelled partner (-1) counting as the example's own label."""
  ce = cross_entropy(logits, batch["label"], num_classes, label_smoothing)
  if "mix_weight" not in batch:
    return ce
  w = batch["mix_weight"]
  partner = jnp.where(batch["label_mix"] >= 0, batch["label_mix"], batch["label"])
  return w * ce + (1.0 - w) * cross_entropy(logits, partner, num_classes, label_smoothing)


def warmup_factor(step, warmup_steps: int):
  """Linear warm-up of a loss weight: min((step + 1) / warmup_steps, 1); 1 without warm-up
  (mdistiller's DKD: min(epoch / warmup, 1) with epochs counted from 1)."""
  if not warmup_steps:
    return 1.0
  return jnp.minimum((step + 1).astype(jnp.float32) / warmup_steps, 1.0)


STATE_FINITE = "state_finite"  # train-step metric: 1.0 if the updated state is all finite


def make_train_step(model, tx, loss_cfg, num_classes: int, distiller=None,
                    partial_labels: bool = False, warmup_steps: dict | None = None) -> Callable:
  """(state, batch, key, frozen, teacher_vars) -> (state, metrics).

  `partial_labels`: label -1 marks an unlabelled example (synthetic images with
  data.synthetic_labels=False): CE and accuracy average over the labelled ones only, the
  distillation terms over all.
  `frozen`: variables that are inputs, not state (see `create_train_state`); {} for most.
  `distiller` (kdjax/distill/objective.py): the teachers and the distillation terms; None: CE only.
  `teacher_vars`: the teachers' variables (a list, [] without online teachers): an input, so
  no gradient reaches them and no update can change them.
  `warmup_steps`: term -> steps of its weight's linear warm-up (loss.warmup_epochs).
  """
  weights = distiller.weights if distiller is not None else {"ce": float(loss_cfg.ce_weight)}
  warmup_steps = {k: v for k, v in (warmup_steps or {}).items() if v and k in weights}

  def loss_fn(trainable, batch_stats, frozen, teacher_vars, memory, batch, rng, step):
    (logits, out), new_vars = model.apply(
        merge(frozen, trainable["model"], batch_stats), batch["image"], train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    new_stats = {k: v for k, v in new_vars.get("batch_stats", {}).items()
                 if k not in frozen.get("batch_stats", {})}
    ce = train_cross_entropy(logits, batch, num_classes, loss_cfg.label_smoothing)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    if partial_labels:
      labelled = (batch["label"] >= 0).astype(jnp.float32)
      count = jnp.maximum(labelled.sum(), 1.0)
      terms = {"ce": jnp.sum(ce * labelled) / count}
      accuracy = jnp.sum(correct * labelled) / count
    else:
      terms, accuracy = {"ce": ce.mean()}, correct.mean()
    metrics = {}
    if distiller is not None and len(weights) > 1:
      tout = distiller.outputs_for(teacher_vars, batch)
      more, metrics, memory = distiller.terms(trainable["aux"], memory, batch,
                                              out["pre_logits"], logits, tout,
                                              jax.random.fold_in(rng, 1))
      terms.update(more)
    loss = sum(weights[k] * warmup_factor(step, warmup_steps.get(k, 0)) * v
               for k, v in terms.items())
    return loss, (new_stats, memory, {"loss": loss, **terms, **metrics, "accuracy": accuracy})

  def train_step(state: TrainState, batch, key, frozen, teacher_vars=()):
    rng = jax.random.fold_in(key, state.step)
    trainable = {"model": state.params, "aux": state.aux}
    grads, (batch_stats, memory, metrics) = jax.grad(loss_fn, has_aux=True)(
        trainable, state.batch_stats, frozen, teacher_vars, state.memory, batch, rng, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    metrics["grad_norm"] = optax.global_norm(grads["model"])
    # an update can overflow with a finite loss and gradient: the trainer checks this too
    metrics[STATE_FINITE] = jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((trainable, batch_stats, memory))]
    )).astype(jnp.float32)
    new_state = state.replace(step=state.step + 1, params=trainable["model"],
                              batch_stats=batch_stats, opt_state=opt_state,
                              aux=trainable["aux"], memory=memory)
    return new_state, metrics

  return train_step


def make_eval_step(predict_fn: Callable, num_classes: int) -> Callable:
  """(variables, batch) -> sums {"correct", "loss", "count"} over the real (mask=1) examples.

  With batch["teacher_probs"] (the teachers' task probabilities [B, C], kdjax/evaluators) also
  the fidelity sums big_vision's distillation evaluator reports (google-research/big_vision at
  0127fb6, big_vision/evaluators/proj/distill/distance.py:50-54 kind "kl" and :61-65 kind
  "agree", run with k=1 and k=5 by configs/proj/distill/bit_i1k.py:140-141):
  "teacher_correct", "agree" (student top-1 == teacher top-1), "agree_top5" (the teacher's
  top-1 among the student's top 5, as big_vision's `top_k(student, k) == top_k(teacher, 1)`;
  all classes when there are fewer than 5) and "kl" (KL(teacher || student) at temperature 1,
  summed over classes, 0 log 0 = 0).
  """

  def eval_step(variables, batch):
    logits = predict_fn(variables, batch["image"])
    mask = batch["mask"]
    ce = cross_entropy(logits, batch["label"], num_classes)
    pred = jnp.argmax(logits, -1)
    correct = (pred == batch["label"]).astype(jnp.float32)
    sums = {"correct": jnp.sum(correct * mask), "loss": jnp.sum(ce * mask),
            "count": jnp.sum(mask)}
    if "teacher_probs" in batch:
      probs = batch["teacher_probs"].astype(jnp.float32)
      teacher = jnp.argmax(probs, -1)
      top = jax.lax.top_k(logits, min(5, num_classes))[1]
      log_student = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
      kl = jnp.sum(jax.scipy.special.xlogy(probs, probs) - probs * log_student, -1)
      sums["teacher_correct"] = jnp.sum((teacher == batch["label"]) * mask)
      sums["agree"] = jnp.sum((teacher == pred) * mask)
      sums["agree_top5"] = jnp.sum(jnp.any(top == teacher[:, None], -1) * mask)
      sums["kl"] = jnp.sum(kl * mask)
    return sums

  return eval_step
