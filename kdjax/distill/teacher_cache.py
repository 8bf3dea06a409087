"""Teacher-output cache: run the frozen teachers once over the training set, train from disk.

Paper B (Qiu et al., arXiv 2406.07337) computes the pre-trained features once per image and
never runs the teacher during training; its reference code therefore trains without data
augmentation. kdjax keeps augmentation: the cache holds K >= 1 augmented *views* of every
training image (`teacher.cache_views`), each defined by an integer seed
(`seed = source_row * K + view`, the key of `jax.random.key(seed)` for the run's augmentation
config), with the teachers' concatenated features and task logits for that view. In training,
each example of an epoch takes one of its K views (drawn from (run seed, epoch)) and the
student sees exactly the augmented image the teachers saw.

On disk (`teacher.cache_dir`, default WORKDIR/teacher_cache):
  cache.json             what the cache was made from (teachers with their exact weights,
                         data, augmentation, K) and what it cost; written before any shard
  shard-00000.array_record ...  records for positions [i*S, (i+1)*S) x K views
                         (S = `teacher.cache_shard_size`), each a msgpack dict
                         {position, row, view, aug_seed, features, logits}
A shard is written under a temporary name (`<shard>.<host>.<pid>.<hex>.tmp`) and renamed when
complete, so a killed job resumes from the finished shards: no view is computed twice into the
output, none is lost. The temporary files a killed job leaves are deleted by the next build once
they are stale: their process is gone from this host, or they are over an hour old (a cache may
be shared by concurrent runs, whose files in progress are left alone). SIGTERM (kdjax.preemption)
stops a build after the shard in progress (errors.Preempted, exit status 143); the same command
resumes. A cache made for a different setup (shard size included) is refused with a message (it
is never silently reused or overwritten).
"""

import hashlib
import json
import os
import re
import time

import flax.serialization
import jax
import numpy as np
from absl import logging
from array_record.python import array_record_module
from jax.experimental import multihost_utils

from kdjax import errors, files, preemption, steps
from kdjax import sharding as shd
from kdjax.data import augment

VERSION = 2  # of cache.json's spec: a cache of another version is refused (rebuild it)
_OURS = re.compile(r"^(?:shard-\d+\.array_record|\.?cache\.json)$")  # files.tmp_name's names


class TeacherCacheError(errors.UserError):
  """A cache that cannot be used as it is; the message names the fix."""


class Cache:
  """The loaded cache: per training position and view, the teachers' outputs."""

  def __init__(self, rows: np.ndarray, num_views: int, arrays: dict, manifest: dict):
    self.rows, self.num_views, self.arrays, self.manifest = rows, num_views, arrays, manifest

  def seeds(self, positions: np.ndarray, views: np.ndarray) -> np.ndarray:
    return seeds_of(self.rows[positions], views, self.num_views)


def seeds_of(rows, views, num_views: int) -> np.ndarray:
  return (np.asarray(rows, np.int64) * num_views + views).astype(np.int32)


def directory(config, workdir: str) -> str:
  return config.teacher.cache_dir or os.path.join(workdir, "teacher_cache")


def _synthetic_identity(path: str) -> str:
  """A synthetic dataset by content: the sha1 of its generation spec (kdjax.generate's
  generate.json, which holds the plan's and the pipeline weights' sha1) or of its TFDS info."""
  path = os.path.expanduser(path.strip())
  for name in ("generate.json", "dataset_info.json"):
    if os.path.isfile(os.path.join(path, name)):
      with open(os.path.join(path, name), "rb") as f:
        return f"{name}:{hashlib.sha1(f.read()).hexdigest()}"
  return path


def shard_size(config) -> int:
  return int(config.teacher.cache_shard_size)  # > 0: validate.check


def spec(config, rows: np.ndarray, teacher_records: list, distiller) -> dict:
  """Everything the cached outputs and their layout on disk depend on (compared when a cache is
  reused)."""
  d = config.data
  return {
      "version": VERSION,
      "shard_size": shard_size(config),
      "teachers": teacher_records,
      # each teacher's input view of the shared augmented image (distill.view_of)
      "teacher_inputs": [[list(v.image_size), v.crop_fraction, v.resample, list(v.mean),
                          list(v.std)] for v in distiller.views],
      "teacher_dtype": config.teacher.dtype,
      "data": {"name": d.name, "split": d.train_split, "num_examples": int(len(rows)),
               "rows_sha1": hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest(),
               "load_size": d.load_size, "image_size": d.image_size,
               "augment": d.augment.to_dict(), "mean": list(d.mean), "std": list(d.std),
               "synthetic": [_synthetic_identity(p) for p in d.synthetic.split(",") if p],
               "synthetic_per_class": d.synthetic_per_class,
               "synthetic_fraction": d.synthetic_fraction,
               "load_resize": d.load_resize, "load_filter": d.load_filter,
               "max_aspect": d.max_aspect, "eval_crop_fraction": d.eval_crop_fraction,
               "exclude_classes": list(d.exclude_classes)},
      "views": int(config.teacher.cache_views),
      # what turns a view's seed into its crop/flip
      "jax": {"version": jax.__version__, "prng": str(jax.config.jax_default_prng_impl),
              "threefry_partitionable": bool(jax.config.jax_threefry_partitionable)},
      "features": distiller.num_teacher_features,
      "logit_teachers": len(distiller.kd_teachers),
      "num_classes": distiller.num_classes,
  }



def _to_host(x) -> np.ndarray:
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def build(config, workdir: str, train_input, distiller, teacher_vars, teacher_records: list,
          mesh) -> tuple[Cache, dict]:
  """Makes (or resumes, or reuses) the cache of `train_input`'s examples; returns it loaded
  and the cost of making it {"wall_time_s", "flops"} (as recorded when it was made)."""
  k = int(config.teacher.cache_views)
  if k < 1:
    raise ValueError(f"teacher.cache_views must be >= 1, got {k}")
  path = directory(config, workdir)
  rows = np.asarray(train_input.rows)
  want = files.as_json(spec(config, rows, teacher_records, distiller))
  manifest_path = os.path.join(path, "cache.json")
  manifest = None
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    diff = files.differences(manifest["spec"], want)
    if diff:
      reuse = ""
      if diff == ["shard_size"]:  # the same outputs, laid out in other shards
        reuse = f"set teacher.cache_shard_size={manifest['spec']['shard_size']} to use it, "
      raise TeacherCacheError(
          f"the teacher cache in {path} was made for a different setup (differs in {diff}): "
          f"{reuse}delete that directory to rebuild it, or set teacher.cache_dir to a new "
          "directory")
  size = want["shard_size"]
  num_shards = -(-len(rows) // size)
  names = [os.path.join(path, f"shard-{i:05d}.array_record") for i in range(num_shards)]
  todo = [i for i, n in enumerate(names) if not os.path.isfile(n)]
  if manifest is None and len(todo) < num_shards:
    raise TeacherCacheError(f"{path} holds teacher cache shards but no cache.json saying what "
                            "they were made from: delete the directory to rebuild the cache")
  if manifest is None:
    manifest = {"spec": want, "cost": {"wall_time_s": 0.0, "flops": 0.0}}
  if todo:
    if jax.process_index() == 0:
      for name in files.remove_stale_tmp(path, _OURS):
        logging.info("teacher cache: removed %s, left by a killed writer", name)
    manifest = _compute(config, path, names, todo, rows, k, train_input, distiller,
                        teacher_vars, mesh, manifest)
  return _load(names, rows, k, size, distiller, manifest), dict(manifest["cost"])


def _write_manifest(path: str, manifest: dict) -> None:
  if jax.process_index() == 0:
    files.write_json(os.path.join(path, "cache.json"), manifest)


def _compute(config, path, names, todo, rows, k, train_input, distiller, teacher_vars, mesh,
             manifest) -> dict:
  os.makedirs(path, exist_ok=True)
  _write_manifest(path, manifest)
  batch = int(config.eval_batch_size)
  shd.check_global_batch(batch, mesh, "eval_batch_size")
  batch_sh = shd.batch_sharding(mesh)
  data_cfg = config.data
  size = shard_size(config)

  def job(teacher_vars, images, seeds):
    x = augment.augment_keys(images, augment.view_keys(seeds), data_cfg)
    return distiller.teacher_outputs(teacher_vars, x)

  vars_sh = jax.tree.map(lambda x: x.sharding, teacher_vars)
  job = jax.jit(job, in_shardings=(vars_sh, batch_sh, batch_sh), out_shardings=batch_sh)
  source = train_input.source
  h = w = None
  t0, flops_per_batch = time.perf_counter(), None  # t0: start of the shard (its cost)
  t_start = t0  # start of the job (progress rate and ETA)
  done_batches = 0
  total_batches = sum(-(-min(size, len(rows) - i * size) * k // batch) for i in todo)
  for i in todo:
    positions = np.arange(i * size, min((i + 1) * size, len(rows)))
    # every (position, view) pair of the shard, position-major
    pos = np.repeat(positions, k)
    views = np.tile(np.arange(k, dtype=np.int32), len(positions))
    seeds = seeds_of(rows[pos], views, k)
    feats, logits = [], []
    for start in range(0, len(pos), batch):
      sel = np.arange(start, min(start + batch, len(pos)))
      pad = np.concatenate([sel, np.full(batch - len(sel), sel[0])])
      local = shd.process_slice(batch)
      images, _ = source.read(rows[pos[pad][local]])  # this process's rows only
      if h is None:
        h, w = images.shape[1:3]
        images_sds = jax.ShapeDtypeStruct((batch, h, w, images.shape[3]), images.dtype,
                                          sharding=batch_sh)
        seeds_sds = jax.ShapeDtypeStruct((batch,), np.int32, sharding=batch_sh)
        flops_per_batch = steps.xla_flops(job, teacher_vars, images_sds, seeds_sds)
      out = job(teacher_vars, shd.global_from_process_local(images, mesh),
                shd.global_from_process_local(seeds[pad][local], mesh))
      feats.append(_to_host(out["features"])[:len(sel)])
      if "logits" in out:
        logits.append(_to_host(out["logits"])[:len(sel)])
      done_batches += 1
      if done_batches % 20 == 0 or done_batches == total_batches:
        elapsed = time.perf_counter() - t_start
        logging.info("teacher cache: %d/%d batches, %.1f views/s, ETA %.0fs", done_batches,
                     total_batches, done_batches * batch / elapsed,
                     elapsed / done_batches * (total_batches - done_batches))
    feats = np.concatenate(feats)
    logits = np.concatenate(logits) if logits else None
    if jax.process_index() == 0:
      _write_shard(names[i], pos, rows, views, seeds, feats, logits)
    manifest["cost"]["wall_time_s"] += time.perf_counter() - t0
    manifest["cost"]["flops"] += (flops_per_batch or 0.0) * -(-len(pos) // batch)
    _write_manifest(path, manifest)
    if preemption.requested():  # one process only (several stop together in the train loop)
      raise errors.Preempted(
          f"preempted while building the teacher cache: {sum(map(os.path.isfile, names))} of "
          f"{len(names)} shards are complete in {path}; run the same command again to resume")
    t0 = time.perf_counter()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("kdjax teacher cache written")
  return manifest


def _write_shard(name, pos, rows, views, seeds, feats, logits) -> None:
  """One shard's records, visible under `name` only when complete."""
  tmp = files.tmp_name(name)
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  for j in range(len(pos)):
    record = {"position": int(pos[j]), "row": int(rows[pos[j]]), "view": int(views[j]),
              "aug_seed": int(seeds[j]), "features": feats[j]}
    if logits is not None:
      record["logits"] = logits[j]
    writer.write(flax.serialization.msgpack_serialize(record))
  writer.close()
  os.replace(tmp, name)


def _load(names, rows, k, size, distiller, manifest) -> Cache:
  n, d = len(rows), distiller.num_teacher_features
  feats = np.zeros((n, k, d), np.float32)
  t = len(distiller.kd_teachers)
  logits = np.zeros((n, k, t, distiller.num_classes), np.float32) if t else None
  seen = np.zeros((n, k), bool)
  for name in names:
    try:
      reader = array_record_module.ArrayRecordReader(name)
      try:
        records = reader.read_all()
      finally:
        reader.close()
    except Exception as e:  # noqa: BLE001
      raise TeacherCacheError(f"teacher cache shard {name} cannot be read ({e}): delete it and "
                              "start again to recompute only that shard") from e
    for raw in records:
      try:
        r = flax.serialization.msgpack_restore(raw)
        p, v = int(r["position"]), int(r["view"])
        feats[p, v] = r["features"]
        if logits is not None:
          logits[p, v] = r["logits"]
      except Exception as e:  # noqa: BLE001  (any decoding failure means a damaged shard)
        raise TeacherCacheError(f"teacher cache shard {name} is damaged ({e}): delete it and "
                                "start again to recompute only that shard") from e
      if seen[p, v] or int(r["row"]) != int(rows[p]):
        raise TeacherCacheError(f"teacher cache shard {name} holds a duplicate or misplaced "
                                "record: delete it and start again to recompute it")
      seen[p, v] = True
  if not seen.all():
    missing = int((~seen).sum())
    bad = sorted({names[p // size] for p in np.nonzero(~seen.all(axis=1))[0]})
    raise TeacherCacheError(f"the teacher cache misses {missing} views: delete {bad[:5]} and "
                            "start again to recompute them")
  arrays = {"teacher_features": feats}
  if logits is not None:
    arrays["teacher_logits"] = logits
  return Cache(rows, k, arrays, manifest)

