"""Global, deterministic, resumable batches for training and exactly-counted evaluation.

The batch of training step `s` is a pure function of (seed, s): epoch e = s // steps_per_epoch
is a permutation drawn from `default_rng([seed, e])`, sliced at position s % steps_per_epoch.
The data position of a run is therefore its step; a resumed run sees exactly the batches an
uninterrupted run would (tested). The last incomplete batch of an epoch is dropped.

Two paths, same batches:
- in memory (`data.in_memory=True`, CIFAR-size sets): the selected split is uploaded once as a
  replicated uint8 array; each step gathers its rows and augments them inside one jitted call,
  so nothing but the [B] index vector crosses from the host.
- streaming: a thread pool decodes this process's rows of upcoming batches from the array_record
  source ahead of time; the uint8 batch is assembled into a global array and augmented on device.

Evaluation pads the last batch (index 0, mask 0) so every example counts exactly once.
"""

import concurrent.futures
import dataclasses
import functools
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging

from kdjax import errors
from kdjax import sharding as shd
from kdjax.data import augment, sources


def _mixup(batch: dict, key, cfg) -> dict:
  """The batch with mixup (data.augment.mixup_alpha > 0): "image" mixed, "label_mix" and
  "mix_weight" added (kdjax.data.augment.mixup), from the step's augmentation key."""
  image, label_mix, weight = augment.mixup(batch["image"], batch["label"],
                                           jax.random.fold_in(key, 1),
                                           cfg.augment.mixup_alpha, cfg.augment.mixup_prob)
  return {**batch, "image": image, "label_mix": label_mix, "mix_weight": weight}


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


class TrainInput:
  """Augmented global training batches by step: {"image": f32 [B,S,S,3], "label": i32 [B],
  "index": i32 [B] (positions into `rows`: CRD's memory bank rows)}; with mixup
  (data.augment.mixup_alpha > 0) the image is mixed after augmentation, inside the same jitted
  call on the global batch, and "label_mix" (the partner's label, i32 [B]) and "mix_weight"
  (f32 [B], 1 for unmixed rows) are added (kdjax.data.augment.mixup)."""

  def __init__(self, source: sources.Source, rows: np.ndarray, cfg, mesh, global_batch: int,
               seed: int):
    if len(rows) < global_batch:
      raise errors.UserError(f"batch_size={global_batch} exceeds the {len(rows)} training "
                             "examples: lower batch_size")
    self.source, self.rows, self.cfg, self.mesh = source, rows, cfg, mesh
    self.global_batch, self.seed, self.in_memory = global_batch, seed, cfg.in_memory
    self.num_examples = len(rows)
    self.steps_per_epoch = self.num_examples // global_batch
    self._cached_epoch, self._cached_perm = None, None
    batch_sh, repl = shd.batch_sharding(mesh), shd.replicated(mesh)
    self._augment = jax.jit(functools.partial(augment.augment, cfg=cfg),
                            in_shardings=(batch_sh, repl), out_shardings=batch_sh)
    self._mix = cfg.augment.mixup_alpha > 0
    self._mixup = jax.jit(functools.partial(_mixup, cfg=cfg), in_shardings=(batch_sh, repl),
                          out_shardings=batch_sh)
    self._augment_keys = jax.jit(
        lambda images, seeds: augment.augment_keys(images, augment.view_keys(seeds), cfg),
        in_shardings=(batch_sh, batch_sh), out_shardings=batch_sh)
    self.cache = None
    if self.in_memory:
      images, labels = source.read(rows)
      self._images = shd.global_from_host(images, repl)  # [N,H,W,3] uint8, on every device
      self._labels = shd.global_from_host(labels, repl)

      def gather_augment(images, labels, idx, key):
        batch = {"image": augment.augment(images[idx], key, cfg), "label": labels[idx],
                 "index": idx}
        return _mixup(batch, key, cfg) if self._mix else batch

      self._gather = jax.jit(gather_augment, in_shardings=(repl, repl, batch_sh, repl),
                             out_shardings=batch_sh)
    else:
      self._pool = concurrent.futures.ThreadPoolExecutor(max(1, cfg.num_workers))
      self._pending: dict[int, concurrent.futures.Future] = {}

  def attach_cache(self, cache) -> None:
    """Train on cached teacher outputs (kdjax/distill/teacher_cache.py): each example of an epoch
    takes one of the cache's K augmented views (drawn from (seed, epoch)), augmented from that
    view's seed exactly as when the teachers saw it, with the teachers' outputs for that view
    in the batch ("teacher_features", "teacher_logits")."""
    self.cache = cache
    self._cached_views = (None, None)
    if not self.in_memory:
      return
    repl, batch_sh = shd.replicated(self.mesh), shd.batch_sharding(self.mesh)
    self._cache_arrays = {k: shd.global_from_host(v, repl) for k, v in cache.arrays.items()}
    cfg = self.cfg

    def gather_cached(images, labels, arrays, idx, views, seeds):
      out = {"image": augment.augment_keys(images[idx], augment.view_keys(seeds), cfg),
             "label": labels[idx], "index": idx}
      out.update({k: v[idx, views] for k, v in arrays.items()})
      return out

    self._gather_cached = jax.jit(gather_cached, in_shardings=(repl, repl, repl, batch_sh,
                                                               batch_sh, batch_sh),
                                  out_shardings=batch_sh)

  def labels(self) -> np.ndarray:
    """The label of every training row (-1: unlabelled), in `rows` order (streaming: decodes
    the rows once; CRD's memory bank needs them)."""
    if self.in_memory:
      return shd.host_copy(self._labels)
    return self.source.read(self.rows)[1]

  def _views(self, step: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(view, augmentation seed) of each example of a step in cached mode."""
    epoch = step // self.steps_per_epoch
    if self._cached_views[0] != epoch:
      k = self.cache.num_views
      drawn = np.random.default_rng([self.seed, epoch, 1]).integers(0, k, self.num_examples)
      self._cached_views = (epoch, drawn)
    views = self._cached_views[1][positions].astype(np.int32)
    return views, self.cache.seeds(positions, views)

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._cached_epoch != epoch:  # one permutation per epoch, drawn once
      self._cached_epoch = epoch
      self._cached_perm = epoch_permutation(self.seed, epoch, self.num_examples)
    return self._cached_perm

  def indices(self, step: int) -> np.ndarray:
    """Positions (into `rows`) of the global batch of `step`."""
    epoch, i = divmod(step, self.steps_per_epoch)
    return self._permutation(epoch)[i * self.global_batch:(i + 1) * self.global_batch]

  def batch(self, step: int, key: jax.Array) -> dict:
    if self.cache is not None:
      return self._cached_batch(step)
    if self.in_memory:
      idx = shd.global_from_host(self.indices(step).astype(np.int32),
                                 shd.batch_sharding(self.mesh))
      return self._gather(self._images, self._labels, idx, key)
    for s in range(step, step + self.cfg.prefetch + 1):  # keep the pool `prefetch` steps ahead
      if s not in self._pending:
        local = self.indices(s)[shd.process_slice(self.global_batch)]
        self._pending[s] = self._pool.submit(self.source.read, self.rows[local])
    for s in [s for s in self._pending if s < step]:
      self._pending.pop(s).cancel()
    images, labels = self._pending.pop(step).result()
    images = shd.global_from_process_local(images, self.mesh)
    labels = shd.global_from_process_local(labels, self.mesh)
    index = shd.global_from_host(self.indices(step).astype(np.int32),
                                 shd.batch_sharding(self.mesh))
    batch = {"image": self._augment(images, key), "label": labels, "index": index}
    return self._mixup(batch, key) if self._mix else batch

  def _cached_batch(self, step: int) -> dict:
    positions = self.indices(step)
    views, seeds = self._views(step, positions)
    batch_sh = shd.batch_sharding(self.mesh)
    if self.in_memory:
      put = lambda x: shd.global_from_host(x, batch_sh)  # noqa: E731
      return self._gather_cached(self._images, self._labels, self._cache_arrays,
                                 put(positions.astype(np.int32)), put(views), put(seeds))
    local = shd.process_slice(self.global_batch)
    images, labels = self.source.read(self.rows[positions[local]])
    put = lambda x: shd.global_from_process_local(x, self.mesh)  # noqa: E731
    out = {"image": self._augment_keys(put(images), put(seeds[local])), "label": put(labels),
           "index": shd.global_from_host(positions.astype(np.int32), batch_sh)}
    out.update({k: put(v[positions[local], views[local]]) for k, v in self.cache.arrays.items()})
    return out


@dataclasses.dataclass
class EvalInput:
  """Fixed-size padded eval batches {"image", "label", "mask"}; mask marks real examples."""

  source: sources.Source
  rows: np.ndarray
  cfg: object
  mesh: object
  batch_size: int

  def __post_init__(self):
    batch_sh, repl = shd.batch_sharding(self.mesh), shd.replicated(self.mesh)
    self.num_examples = len(self.rows)
    self.num_batches = -(-self.num_examples // self.batch_size)
    prep = functools.partial(augment.preprocess_eval, cfg=self.cfg)
    self._prep = jax.jit(prep, in_shardings=batch_sh, out_shardings=batch_sh)
    self._images: jax.Array | None = None
    if self.cfg.in_memory:
      images, labels = self.source.read(self.rows)
      self._images = shd.global_from_host(images, repl)
      self._labels = shd.global_from_host(labels, repl)
      self._gather = jax.jit(lambda im, lb, idx: (prep(im[idx]), lb[idx]),
                             in_shardings=(repl, repl, batch_sh),
                             out_shardings=(batch_sh, batch_sh))

  def batches(self) -> Iterator[dict]:
    batch_sh = shd.batch_sharding(self.mesh)
    for b in range(self.num_batches):
      pos = np.arange(b * self.batch_size, (b + 1) * self.batch_size)
      mask = (pos < self.num_examples).astype(np.float32)
      pos = np.where(mask > 0, pos, 0)
      if self._images is not None:
        image, label = self._gather(self._images, self._labels,
                                    shd.global_from_host(pos.astype(np.int32), batch_sh))
      else:
        local = pos[shd.process_slice(self.batch_size)]
        images, labels = self.source.read(self.rows[local])
        image = self._prep(shd.global_from_process_local(images, self.mesh))
        label = shd.global_from_process_local(labels, self.mesh)
      yield {"image": image, "label": label, "mask": shd.global_from_host(mask, batch_sh)}


@dataclasses.dataclass
class Data:
  train: TrainInput
  evals: dict  # name -> EvalInput ("val" when data.val_fraction > 0, and "test")
  num_classes: int
  class_names: list


def with_synthetic(real: sources.Source, rows: np.ndarray, cfg, labels=None):
  """(source, rows): the real training rows followed by those of each `data.synthetic`
  directory (`data.synthetic_per_class` / `synthetic_fraction` of each class: the first ones of
  the generation's plan). Validation and test splits stay real. `labels`: the real split's
  labels when already read (else read only if a set needs checking)."""
  parts, all_rows, offset = [real], [rows], len(real)
  for directory in filter(None, (d.strip() for d in cfg.synthetic.split(","))):
    synth = sources.open_synthetic(directory, cfg, real)
    _check_generated_for(directory, real, rows, labels)
    chosen = np.arange(len(synth))
    per_class, fraction = cfg.synthetic_per_class, cfg.synthetic_fraction
    if per_class is not None and fraction is not None:
      raise errors.UserError("set at most one of data.synthetic_per_class and "
                             "data.synthetic_fraction")
    if per_class is not None or fraction is not None:
      labels = synth.labels()
      keep = np.zeros(len(chosen), bool)
      for c in np.unique(labels):
        of_c = np.flatnonzero(labels == c)  # in plan order: a prefix is a smaller plan
        n = per_class if per_class is not None else int(round(fraction * len(of_c)))
        keep[of_c[:n]] = True
      chosen = chosen[keep]
    parts.append(synth)
    all_rows.append(offset + chosen)
    offset += len(synth)
  unlabelled = () if cfg.synthetic_labels else tuple(range(1, len(parts)))
  logging.info("training rows: %d real + %d synthetic (%s, %s)", len(rows),
               sum(len(r) for r in all_rows[1:]), cfg.synthetic,
               "labelled" if cfg.synthetic_labels else "unlabelled: distillation terms only")
  return sources.ConcatSource(parts, unlabelled), np.concatenate(all_rows)


def with_unlabelled(source, rows: np.ndarray, real: sources.Source, extra: np.ndarray):
  """(source, rows) followed by the rows `extra` of the real train split read without labels
  (label -1; `data.unlabelled_rest`): the training rows, then len(source) + extra."""
  logging.info("training rows: %d + %d unlabelled (left out by the data-limited selection: "
               "distillation terms only)", len(rows), len(extra))
  return (sources.ConcatSource([source, real], unlabelled=(1,)),
          np.concatenate([rows, len(source) + np.asarray(extra, np.int64)]))


def _check_generated_for(directory: str, real: sources.Source, rows: np.ndarray,
                         labels=None) -> None:
  """Warns when a set generated as a multiple of the real per-class counts was made for another
  real selection than this run's (e.g. generated for n_per_class=3, trained with 10)."""
  import json
  import os
  spec_path = os.path.join(os.path.expanduser(directory), "generate.json")
  if not os.path.isfile(spec_path):
    return
  with open(spec_path) as f:
    spec = json.load(f)
  if not spec.get("real_counts"):
    return
  labels = real.labels() if labels is None else labels
  ours = np.bincount(labels[rows], minlength=real.num_classes).tolist()
  if ours != spec["real_counts"]:
    logging.warning("data.synthetic %s was generated as %sx the real per-class counts %s..., "
                    "but this run trains on %s...: the mix is not the intended multiple",
                    directory, spec.get("multiple"), spec["real_counts"][:5], ours[:5])


def build(cfg, mesh, seed: int, global_batch: int, eval_batch: int) -> Data:
  """Opens the configured TFDS dataset and builds its train/val/test inputs."""
  shd.check_global_batch(global_batch, mesh, "batch_size")
  shd.check_global_batch(eval_batch, mesh, "eval_batch_size")
  if cfg.unlabelled_rest and not (cfg.n_per_class or cfg.fraction):
    raise errors.UserError("data.unlabelled_rest=True adds the training images that the "
                           "data-limited selection leaves out: set data.n_per_class or "
                           "data.fraction")
  train_src = sources.open_source(cfg, cfg.train_split)
  needs_labels = cfg.val_fraction > 0 or cfg.n_per_class or cfg.fraction
  labels = train_src.labels() if needs_labels else None
  if needs_labels:
    train_rows, val_rows = sources.split_train_val(labels, cfg, cfg.subset_seed)
  else:
    train_rows, val_rows = np.arange(len(train_src)), np.arange(0)
  rest = None
  if cfg.unlabelled_rest:
    rest = sources.left_out(len(train_src), train_rows, val_rows)
  source = train_src
  if cfg.synthetic:
    source, train_rows = with_synthetic(train_src, train_rows, cfg, labels)
  if rest is not None:
    source, train_rows = with_unlabelled(source, train_rows, train_src, rest)
  train = TrainInput(source, train_rows, cfg, mesh, global_batch, seed)
  evals = {}
  if len(val_rows):
    evals["val"] = EvalInput(train_src, val_rows, cfg, mesh, eval_batch)
  if cfg.test_split:
    test_src = sources.open_source(cfg, cfg.test_split)
    evals["test"] = EvalInput(test_src, np.arange(len(test_src)), cfg, mesh, eval_batch)
  return Data(train, evals, train_src.num_classes, train_src.class_names)

