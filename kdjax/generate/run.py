"""One generation run, `generate(config, workdir)`: the plan, the spec check (a workdir made for
another setup is refused), the shards still to do, the sampling in global batches (each handed
to `write_batch`, which writes the shards it completes), the dataset's metadata and the report.

Process 0 alone touches the workdir (a shared filesystem in multi-process runs); the other
processes follow its decisions and compute their part of every batch.
"""

import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from kdjax import files, metric_writers
from kdjax import sharding as shd
from kdjax.generate import pipeline, sampler, shards
from kdjax.generate.plan import GenerateError, Plan, Target, target_of

SPEC_FILE = "generate.json"
REPORT_FILE = "report.json"


def generate(config, workdir: str) -> dict:
  """Runs (or resumes) the generation; returns the run's report (also in WORKDIR/report.json)."""
  s = config.synth
  work = Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  if s.encoding not in shards.ENCODINGS:
    raise GenerateError(f"unknown synth.encoding {s.encoding!r}; valid: {list(shards.ENCODINGS)}")
  target = target_of(config)
  directory = pipeline.resolve(s.pipeline, s.revision or None)
  pipeline.check_layout(directory, s.pipeline)
  spec = _open_workdir(config, work, directory, target)

  layout = shards.Layout(len(target.plan), int(s.shard_size))
  writer = shards.ShardWriter(work, shards.dataset_name(config.data.name), layout.num_shards,
                              shards.features(target.class_names, target.image_size, s.encoding),
                              s.encoding, s.jpeg_quality)
  todo = _shards_to_do(writer, layout)
  todo_images = layout.images(np.flatnonzero(todo))
  logging.info("plan: %d images of %d classes (%s), %d shards, %d done, %d images to generate",
               len(target.plan), int((target.counts > 0).sum()), config.data.name,
               layout.num_shards, layout.num_shards - int(todo.sum()), len(todo_images))

  mesh = shd.make_mesh()
  global_batch = int(s.batch_per_device) * mesh.devices.size
  logging.info("sampling: global batch %d on %d devices (%d processes)", global_batch,
               mesh.devices.size, jax.process_count())
  report = {"num_images": len(target.plan), "num_shards": layout.num_shards,
            "image_size": target.image_size, "resolution": s.resolution,
            "global_batch": global_batch, "devices": mesh.devices.size,
            "platform": jax.devices()[0].platform, "generated_this_run": int(len(todo_images))}
  if len(todo_images):
    batches = _Batches(pipeline.load_pipeline(directory, s.scheduler, s.dtype), s, target,
                       todo_images, global_batch, mesh)
    report["flops_per_image"] = batches.flops() / global_batch
    report.update(_generate_images(batches, target.plan, layout, writer))
  if jax.process_index() == 0:
    writer.finalize(layout.lengths, description=(
        f"Synthetic images for {config.data.name} from {s.pipeline} (kdjax.generate): "
        f"{len(target.plan)} images, templates {list(s.templates)}."), metadata=spec)
    files.write_json(work / REPORT_FILE, report)
  return report


# ------------------------------------------------------------------------------- the workdir


def spec_of(config, pipeline_record: dict, target: Target) -> dict:
  """Everything that decides the images (not the batch size or the device count). Keys with a
  leading '_' are provenance, not compared on resume (a moved copy of the same pipeline)."""
  s, real_counts = config.synth, target.real_counts
  return files.as_json({
      "format": 1,
      "pipeline": {k: v for k, v in pipeline_record.items() if k.endswith("sha1")},
      "_pipeline_source": {k: v for k, v in pipeline_record.items() if not k.endswith("sha1")},
      "dtype": s.dtype, "scheduler": s.scheduler, "num_inference_steps": s.num_inference_steps,
      "guidance_scale": s.guidance_scale, "negative_prompt": s.negative_prompt,
      "resolution": s.resolution, "image_size": target.image_size,
      "resize_method": s.resize_method, "encoding": s.encoding,
      "jpeg_quality": s.jpeg_quality if s.encoding == "jpeg" else None,
      "templates": list(s.templates), "seed": s.seed, "shard_size": s.shard_size,
      "real_dataset": config.data.name, "class_names": list(target.class_names),
      "counts": [int(c) for c in target.counts], "num_images": len(target.plan),
      "plan_sha1": target.plan.sha1(),
      # synth.multiple: the real per-class training counts it multiplied (the trainer warns
      # when its own selection differs)
      "multiple": s.multiple or None,
      "real_counts": None if real_counts is None else [int(c) for c in real_counts],
  })



def check_spec(workdir: Path, want: dict) -> None:
  """Refuses a workdir whose generation has another spec; writes the spec into a new one."""
  path = workdir / SPEC_FILE
  if not path.exists():
    files.write_json(path, want)
    return
  diff = files.differences(files.read_json(path), want)
  if diff:
    raise GenerateError(
        f"{workdir} holds a generation with a different setup (differs in {diff}); use a new "
        "--workdir, or delete this one to start over. Finished shards are only reused for "
        "the identical setup.")


def _open_workdir(config, work: Path, directory: Path, target: Target) -> dict | None:
  """Process 0 hashes the pipeline, checks (or writes) the spec, and removes a killed run's
  temporary files; every process raises if it refused. The spec on process 0, else None."""
  s = config.synth
  refused, spec = None, None
  if jax.process_index() == 0:
    try:
      spec = spec_of(config, {"source": s.pipeline, "revision": s.revision or None,
                              **pipeline.pipeline_sha1(directory)}, target)
      check_spec(work, spec)  # first: a refused (or mistyped) workdir is left untouched
      for name in files.remove_stale_tmp(work):
        logging.info("removed %s, left by a killed run", name)
    except Exception as e:  # noqa: BLE001  (told to the other processes, then raised)
      refused = e
  if not _from_process_0(refused is None):
    raise refused or GenerateError(f"process 0 could not start in {work}: see its log")
  return spec


def _shards_to_do(writer: shards.ShardWriter, layout: shards.Layout) -> np.ndarray:
  """bool [num_shards]: the shards not (completely) on disk, as process 0 finds them. A finished
  set being repaired loses its dataset_info.json: no dataset until it is whole again."""
  todo = np.zeros(layout.num_shards, bool)
  if jax.process_index() == 0:
    todo = np.asarray([not writer.complete(i, n) for i, n in enumerate(layout.lengths)])
    if todo.any():
      (writer.directory / shards.DATASET_INFO).unlink(missing_ok=True)
  return _from_process_0(todo)


def _from_process_0(value):
  """`value` as process 0 has it (every process calls this at the same point)."""
  if jax.process_count() == 1:
    return value
  return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


# ------------------------------------------------------------------------------ the sampling


class _Batches:
  """The plan images `todo` in global batches of `size`, sampled on `mesh`: prompts and seeds
  sharded on the data axis, the last batch padded by repeating images (extras dropped)."""

  def __init__(self, pipe: pipeline.Pipeline, synth, target: Target, todo: np.ndarray,
               size: int, mesh):
    self.pipe, self.synth, self.out_size = pipe, synth, target.image_size
    self.todo, self.size = todo, size
    self.repl, self.batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
    self.sampler, self.params = sampler.sharded_sampler(pipe, synth, self.out_size, mesh)
    self.ids = pipeline.tokenize(pipe, target.plan.prompts)
    self.negative = shd.global_from_host(pipeline.tokenize(pipe, [synth.negative_prompt]),
                                         self.repl)
    self.seeds = target.plan.seeds.astype(np.int32)

  def __len__(self) -> int:
    return -(-len(self.todo) // self.size)

  def flops(self) -> float:
    """XLA's FLOPs of one batch (lowered on abstract inputs: no compilation, no sampling)."""
    abstract = lambda *shape: jax.ShapeDtypeStruct(  # noqa: E731
        shape, np.int32, sharding=self.batch_sh)
    return sampler.sampler_flops(self.pipe, self.synth, self.out_size, self.params,
                                 abstract(self.size, self.ids.shape[1]), self.negative,
                                 abstract(self.size))

  def _launch(self, b: int):
    positions = self.todo[b * self.size:(b + 1) * self.size]
    pad = np.resize(positions, self.size)
    put = lambda x: shd.global_from_host(x, self.batch_sh)  # noqa: E731
    return positions, self.sampler(self.params, put(self.ids[pad]), self.negative,
                                   put(self.seeds[pad]))

  def __iter__(self):
    """(plan indices, uint8 images on the host) per batch. Batch b + 1 is dispatched before
    batch b is read back, so the devices stay busy while the host writes."""
    upcoming = self._launch(0)
    for b in range(len(self)):
      positions, images = upcoming
      if b + 1 < len(self):
        upcoming = self._launch(b + 1)
      if jax.process_count() > 1:
        images = multihost_utils.process_allgather(images, tiled=True)
      yield positions, np.asarray(images)[:len(positions)]


class _Progress:
  """Throughput from the second batch on (the first includes compilation) and the console line
  of each batch: images done, images per second, ETA."""

  def __init__(self, total: int):
    self.total, self.done, self.rate = total, 0, 0.0
    self.start = time.perf_counter()
    self.timed_from, self.timed_images, self.first_batch_s = None, 0, None

  def batch_read(self, n: int) -> None:
    now = time.perf_counter()
    if self.timed_from is None:
      self.timed_from, self.first_batch_s = now, now - self.start
    else:
      self.timed_images += n
    self.done += n
    self.rate = self.timed_images / (now - self.timed_from) if self.timed_images else 0.0

  def log(self) -> None:
    eta = metric_writers.hms((self.total - self.done) / self.rate) if self.rate else "?"
    logging.info("generated %d/%d images (%.3f images/s, ETA %s)", self.done, self.total,
                 self.rate, eta)

  def report(self) -> dict:
    now = time.perf_counter()
    out = {"first_batch_s": self.first_batch_s, "wall_time_s": now - self.start}
    if self.timed_images:
      out["images_per_s"] = self.timed_images / (now - self.timed_from)
    return out


def _generate_images(batches: _Batches, plan: Plan, layout: shards.Layout,
                     writer: shards.ShardWriter) -> dict:
  """Samples every batch and hands it to write_batch; returns the report's timings."""
  progress = _Progress(len(batches.todo))
  pending = {}
  for positions, images in batches:
    progress.batch_read(len(positions))
    write_batch(pending, positions, images, plan, layout, writer)
    progress.log()
  return progress.report()


def write_batch(pending: dict, positions, images, plan: Plan, layout: shards.Layout,
                writer: shards.ShardWriter) -> None:
  """Records one generated batch (plan indices `positions`, their images) in `pending` (shard
  -> {plan index: image}) and writes each shard it completes (process 0; the others drop it)."""
  for k, image in zip(positions, images):
    shard = layout.shard_of(int(k))
    pending.setdefault(shard, {})[int(k)] = image
    if len(pending[shard]) == layout.lengths[shard]:
      done = pending.pop(shard)
      if jax.process_index() == 0:
        writer.write(shard, [{"image": done[j], "label": int(plan.labels[j]),
                              "prompt": plan.prompts[j], "seed": int(plan.seeds[j]),
                              "index": j} for j in sorted(done)])
