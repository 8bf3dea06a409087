"""Distillation wiring (kdjax/distill/, steps.py, optim.py, kdjax/train/) against
independent references: the loss recomputed by hand from the networks' outputs, the teacher's
input recomputed from the uint8 image, the cache's views recomputed from their seeds, the eval
metrics recomputed from the test split.

The teacher is a tiny random HF ResNet (10-class head) saved by the test with a preprocessor
config of its own (12 x 20 px, not the student's 8 x 8: catches a missing resize and an h/w
mix-up; mean/std unlike the data's: catches normalising the data's way). The expensive
computations (one train step, three cached-mode runs sharing a cache) are made once per session,
by whichever xdist worker asks first (`_once`), and read back from disk by the tests.
"""

import dataclasses
import fcntl
import functools
import json
import logging
import os
import re
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python, tiny_config

from kdjax import losses, models, optim, runtime, steps
from kdjax import sharding as shd
from kdjax.data import augment, pipeline, sources
from kdjax.distill import objective, teacher_cache, teacher_views, teachers
from kdjax.hf import pretrained
from kdjax.train import trainer

NUM_CLASSES = 10  # kdjax_digits
IMAGE_SHAPE = (8, 8, 3)  # tiny_config's student input
TEACHER_SIZE = (12, 20)
TEACHER_MEAN = (0.3, 0.4, 0.5)
TEACHER_STD = (0.2, 0.25, 0.3)
LR, PRIOR_LR, WEIGHT_DECAY = 1e-3, 1e-2, 0.5
EIGHT_DEVICES = {
    "XLA_FLAGS": runtime.with_cpu_flags("--xla_force_host_platform_device_count=8")}

# Every key the tests rely on, set explicitly (configs/demo.py's defaults are not assumed).
BASE = {
    "loss.ce_weight": 1.0, "loss.kd_weight": 0.0, "loss.align_weight": 0.0,
    "loss.unif_weight": 0.0, "loss.aft_weight": 0.0, "loss.feature_kd_weight": 0.0,
    "loss.label_smoothing": 0.0, "loss.prior_learning_rate": PRIOR_LR,
    "teacher.models": "", "teacher.mode": "online", "teacher.cache_views": 1,
    "teacher.cache_dir": "", "teacher.evaluate": True, "teacher.dtype": "float32",
    "data.n_per_class": 20, "data.fraction": None, "data.val_fraction": 0.1,
    "data.eval_crop_fraction": 1.0,
    "optimizer.name": "adamw", "optimizer.learning_rate": LR,
    "optimizer.weight_decay": WEIGHT_DECAY, "optimizer.decay_norm_and_bias": True,
    "optimizer.schedule": "constant", "optimizer.warmup_steps": 0,
    "optimizer.warmup_epochs": None, "model.name": "resnet18", "model.pretrained": "",
}
PAPER_A = {"loss.kd_weight": 1.0, "loss.align_weight": 1.0, "loss.unif_weight": 1.0}
# The one-step objective: paper A (its three weights are 1), plus AFT (paper B) and feature-KD at
# other weights, so that the total also checks that these two multiply their own terms.
STEP = {**PAPER_A, "loss.aft_weight": 0.5, "loss.feature_kd_weight": 0.25}
CACHE_SHARD = 64  # positions per shard in the cached runs: 200 training images -> 4 shards
CACHED = {"loss.kd_weight": 1.0, "loss.aft_weight": 1.0, "teacher.mode": "cached",
          "teacher.cache_views": 2, "teacher.cache_shard_size": CACHE_SHARD}


def _config(tfds_dir, **overrides):
  return tiny_config(tfds_dir, **{**BASE, **overrides})


def _once(tmp_path_factory, name, make):
  """`make(dir)` once per test session, in whichever xdist worker asks first; the others wait
  for it and read its files."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # shared by the session's workers
  path = base / f"distill_{name}"
  with open(f"{path}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not (path / "DONE").is_file():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      make(path)
      (path / "DONE").touch()
  return path


def _write(path, tree):
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.device_get(tree)))


def _read(path):
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())


def _leaves(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


# ---------------------------------------------------------------- teachers


def _save_teacher(path, num_labels):
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32],
                                     depths=[1, 1, 1, 1], layer_type="basic",
                                     num_labels=num_labels)
  model = transformers.ResNetForImageClassification(config).eval()
  gen = torch.Generator().manual_seed(1)  # eval-mode BN differs from train-mode BN
  for mod in model.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
      n = mod.num_features
      mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
      mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
      mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
      mod.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
  model.save_pretrained(path)
  processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
               "size": {"height": TEACHER_SIZE[0], "width": TEACHER_SIZE[1]}, "resample": 2,
               "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
               "image_mean": list(TEACHER_MEAN), "image_std": list(TEACHER_STD)}
  with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
    json.dump(processor, f)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory):
  """{"ten": a 10-class teacher (the task's classes), "five": a 5-class one}."""

  def make(path):
    _save_teacher(str(path / "ten"), NUM_CLASSES)
    _save_teacher(str(path / "five"), 5)

  path = _once(tmp_path_factory, "teachers", make)
  return {"ten": str(path / "ten"), "five": str(path / "five")}


def _teacher_pixels(pixels, size):
  """Independent reference of a teacher's input: 0-255 pixels [B,H,W,3] resized to `size`
  (linear, antialiased) and normalised with the teacher's own preprocessor values."""
  x = np.asarray(pixels, np.float32)
  if x.shape[1:3] != tuple(size):
    x = np.asarray(jax.image.resize(x, (x.shape[0], *size, 3), "linear", antialias=True))
  return ((x.astype(np.float64) / 255 - TEACHER_MEAN) / TEACHER_STD).astype(np.float32)


def _to_pixels(normalised, data_cfg):
  """The student's normalised images back to 0-255 pixels (NumPy, float64)."""
  return (np.asarray(normalised, np.float64) * data_cfg.std + data_cfg.mean) * 255


def _normalise(images_uint8, data_cfg):
  return ((images_uint8 / 255.0 - data_cfg.mean) / data_cfg.std).astype(np.float32)


# ---------------------------------------------------------------- one train step (shared)


def _batch():
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (16, *IMAGE_SHAPE)).astype(np.uint8)
  labels = rng.randint(0, NUM_CLASSES, 16).astype(np.int32)
  return images, labels


def _student_variables(model):
  """Random student variables drawn with NumPy: passed as `pretrained`, they make the random
  init of `create_train_state` dead code (its XLA compile takes ~25 s on a CPU)."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)),
                                               train=False))
  rng = np.random.RandomState(1)

  def draw(path, x):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "kernel":
      return rng.normal(0, np.sqrt(2 / np.prod(x.shape[:-1])), x.shape).astype(np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
    return rng.normal(0, 0.1, x.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(
      draw, {"params": abstract["params"], "batch_stats": abstract["batch_stats"]})


def _student_features(model):
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((2, *IMAGE_SHAPE)), train=False)[0])[1]
  return int(out["pre_logits"].shape[-1])


def _run_step(teacher_dir: str, out: str) -> None:
  """One train step of STEP's objective with the teacher online, jitted and sharded as train.py
  does it (batch split over every device, the rest replicated, the state donated); writes the
  state before and after, the metrics and the teacher's variables after the step to `out`.
  Also run by test_one_step_on_eight_devices_equals_one in a subprocess with 8 CPU devices."""
  config = _config("", **STEP, **{"teacher.models": teacher_dir})
  teacher = pretrained.load(teacher_dir, on_host=True)
  model = models.build(config.model, NUM_CLASSES)
  distiller = objective.Distiller(config.loss, [teacher_views.view_of(teacher)], NUM_CLASSES,
                                _student_features(model), config.data.mean, config.data.std)
  tx = optim.build(config.optimizer, optim.schedule(config.optimizer, 4, 4),
                   config.loss.prior_learning_rate)
  mesh = shd.make_mesh()
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  init = functools.partial(steps.create_train_state, model, tx, IMAGE_SHAPE, distiller=distiller)
  state = jax.jit(init, out_shardings=repl)(jax.random.key(0), _student_variables(model))
  images, labels = _batch()
  batch = {"image": shd.global_from_host(_normalise(images, config.data), batch_sh),
           "label": shd.global_from_host(labels, batch_sh)}
  teacher_vars = [jax.tree.map(lambda x: shd.global_from_host(x, repl), teacher.variables)]
  before = jax.device_get({"params": state.params, "batch_stats": state.batch_stats,
                           "aux": state.aux})
  step = jax.jit(steps.make_train_step(model, tx, config.loss, NUM_CLASSES, distiller),
                 in_shardings=(repl, batch_sh, repl, repl, repl), out_shardings=(repl, repl),
                 donate_argnums=0)
  state, metrics = step(state, batch, jax.random.key(1), {}, teacher_vars)
  _write(out, {"before": before,
               "after": {"params": state.params, "batch_stats": state.batch_stats,
                         "aux": state.aux},
               "metrics": {k: float(v) for k, v in metrics.items()},
               "teacher_after": teacher_vars[0], "devices": jax.device_count()})


@pytest.fixture(scope="module")
def one_step(teacher_dirs, tmp_path_factory):
  path = _once(tmp_path_factory, "one_step",
               lambda p: _run_step(teacher_dirs["ten"], str(p / "step.msgpack")))
  return _read(path / "step.msgpack")


def _adam_direction(before, after, lr, weight_decay):
  """u = g / (|g| + eps) of AdamW's first step, from update = -lr * (u + weight_decay * p)."""
  b, a = _leaves(before), _leaves(after)
  return {k: -(a[k].astype(np.float64) - b[k]) / lr - weight_decay * b[k] for k in b}


def _assert_first_adam_step(directions, what):
  """Where the gradient is not 0 (it is exactly 0 e.g. for the 3x3 taps that meet only padding
  on ResNet's 1x1 stage-4 maps), |u| = 1: the group's learning rate and weight decay are those
  assumed (a wrong rate scales u, a wrong decay adds decay x p to it)."""
  u = np.abs(np.concatenate([v.ravel() for v in directions.values()]))
  assert u.max() < 1 + 2e-3, f"{what}: an update exceeds lr (max |u| = {u.max()})"
  moved = u[u > 1e-3]
  assert moved.size > 0.2 * u.size, f"{what}: {moved.size} of {u.size} parameters moved"
  assert np.mean(moved > 1 - 2e-3) > 0.99, f"{what}: updates are not lr-sized"


# ---------------------------------------------------------------- cached-mode runs (shared)


def _shard_names(cache_dir):
  return sorted(n for n in os.listdir(cache_dir) if n.endswith(".array_record"))


def _stats(cache_dir):
  """name -> [mtime_ns, inode, size] of every file of the cache."""
  stats = {n: os.stat(os.path.join(cache_dir, n)) for n in os.listdir(cache_dir)}
  return {n: [s.st_mtime_ns, s.st_ino, s.st_size] for n, s in stats.items()}


def _records(path):
  from array_record.python import array_record_module

  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    return [flax.serialization.msgpack_restore(r) for r in reader.read_all()]
  finally:
    reader.close()


class _Messages(logging.Handler):
  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def cached_runs(tfds_dir, teacher_dirs, tmp_path_factory):
  """Three runs sharing one teacher.cache_dir: run1 makes the cache (K=2 views), run2 asks for
  K=3 (refused), run3 reuses it after one of its shards was deleted."""

  def make(root):
    cache = root / "cache"
    config = functools.partial(_config, tfds_dir, **CACHED, **{
        "teacher.models": teacher_dirs["ten"], "teacher.cache_dir": str(cache)})
    log = {}
    messages = _Messages()
    absl_logger = logging.getLogger("absl")
    old_level = absl_logger.level
    absl_logger.addHandler(messages)
    absl_logger.setLevel(logging.INFO)
    try:
      result = trainer.train_and_evaluate(config(), str(root / "run1"))
      log["run1"], log["run1_messages"] = result.metrics, list(messages.lines)
      _write(root / "run1_state.msgpack", {"params": result.state.params,
                                           "batch_stats": result.state.batch_stats})
      log["after_run1"] = _stats(cache)
      shutil.copytree(cache, root / "cache_after_run1")
      try:
        trainer.train_and_evaluate(config(**{"teacher.cache_views": 3}), str(root / "run2"))
      except Exception as e:  # noqa: BLE001  (its type is checked by the test)
        log["run2_error"] = [type(e).__name__, str(e)]
      log["after_run2"] = _stats(cache)
      log["deleted"] = _shard_names(cache)[2]
      os.remove(cache / log["deleted"])
      log["run3"] = trainer.train_and_evaluate(config(), str(root / "run3")).metrics
      log["after_run3"] = _stats(cache)
    finally:
      absl_logger.removeHandler(messages)
      absl_logger.setLevel(old_level)
    with open(root / "log.json", "w") as f:
      json.dump(log, f)

  root = _once(tmp_path_factory, "cached_runs", make)
  with open(root / "log.json") as f:
    return root, json.load(f)


def _final_student(root, config):
  model = models.build(config.model, NUM_CLASSES)
  return model, _read(root / "run1_state.msgpack")


def _predict(model):
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


# ---------------------------------------------------------------- tests
# In this order, the first chunks xdist sends its two workers (2 tests each) start the two
# shared computations on different workers.


def test_one_step_trains_student_and_heads_at_their_rates_never_the_teacher(one_step,
                                                                           teacher_dirs):
  before, after = one_step["before"], one_step["after"]
  # The teacher's variables, an input of the step, come out bit-identical to its checkpoint.
  loaded = _leaves(pretrained.load(teacher_dirs["ten"], on_host=True).variables)
  seen = _leaves(one_step["teacher_after"])
  assert loaded.keys() == seen.keys()
  for k in loaded:
    np.testing.assert_array_equal(seen[k], loaded[k], err_msg=k)
  # What trains: the student (its head included), both projection heads, rho, feature-KD's map.
  assert set(before["aux"]) == {"student_proj", "teacher_proj", "rho", "feature_kd"}
  for name, b, a in [("student head", before["params"]["head"], after["params"]["head"]),
                     *[(k, before["aux"][k], after["aux"][k]) for k in before["aux"]]]:
    for k, v in _leaves(b).items():
      assert np.any(_leaves(a)[k] != v), f"{name}{k} did not change"
  # AdamW's first step moves each parameter by lr (x its sign, plus lr x decay x value).
  # Student and projection heads: the student's lr 1e-3 with its weight decay ...
  model_group = {"params": before["params"], "student_proj": before["aux"]["student_proj"],
                 "teacher_proj": before["aux"]["teacher_proj"]}
  model_after = {"params": after["params"], "student_proj": after["aux"]["student_proj"],
                 "teacher_proj": after["aux"]["teacher_proj"]}
  _assert_first_adam_step(_adam_direction(model_group, model_after, LR, WEIGHT_DECAY),
                          "student and projection heads")
  # ... rho and feature-KD's map: prior_learning_rate 1e-2 and no weight decay (the map starts
  # non-zero, |W| up to 1/8: decay 0.5 would push |u| to 1.06).
  priors = {k: before["aux"][k] for k in ("rho", "feature_kd")}
  priors_after = {k: after["aux"][k] for k in ("rho", "feature_kd")}
  _assert_first_adam_step(_adam_direction(priors, priors_after, PRIOR_LR, 0.0),
                          "rho and feature-KD map")
  assert np.abs(after["aux"]["rho"] - before["aux"]["rho"]).max() == pytest.approx(PRIOR_LR,
                                                                                   rel=1e-3)


def test_step_loss_is_the_weighted_sum_of_terms_recomputed_by_hand(one_step, teacher_dirs):
  config = _config("", **STEP)
  cfg = config.loss
  before, metrics = one_step["before"], one_step["metrics"]
  images, labels = _batch()
  model = models.build(config.model, NUM_CLASSES)
  teacher = pretrained.load(teacher_dirs["ten"])

  @jax.jit
  def forward(student_vars, teacher_vars, x, pixels):  # student in train mode, teacher in eval
    logits, out = model.apply(student_vars, x, train=True, mutable=["batch_stats"])[0]
    t_out = teacher.apply(teacher_vars, pixels)
    return logits, out["pre_logits"], t_out["features"], t_out["logits"]

  logits, g, phi, t_logits = map(np.asarray, forward(
      {"params": before["params"], "batch_stats": before["batch_stats"]}, teacher.variables,
      _normalise(images, config.data), _teacher_pixels(images, TEACHER_SIZE)))
  assert phi.shape == (16, 32) and t_logits.shape == (16, NUM_CLASSES)

  # Paper A's heads: Linear-ReLU-Linear, L2-normalised (NumPy), equal to ProjectionHead.
  def head(p, x):
    h = np.maximum(x @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0)
    z = h @ p["out"]["kernel"] + p["out"]["bias"]
    return z / np.linalg.norm(z, axis=-1, keepdims=True)

  aux = before["aux"]
  z_s, z_t = head(aux["student_proj"], g), head(aux["teacher_proj"], phi)
  assert z_s.shape == z_t.shape == (16, cfg.proj_dim)
  proj = objective.ProjectionHead(cfg.proj_head, cfg.proj_dim)
  np.testing.assert_allclose(jax.jit(proj.apply)({"params": aux["student_proj"]}, g), z_s,
                             atol=1e-6)
  log_p = logits.astype(np.float64)
  log_p = log_p - log_p.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))

  @jax.jit
  def distillation_terms(logits, t_logits, g, phi, z_s, z_t, rho, fk):
    unif_s, unif_t = losses.uniformity(z_s, cfg.unif_t), losses.uniformity(z_t, cfg.unif_t)
    return {"kd": losses.kd_kl(logits, t_logits, cfg.kd_temperature),
            "align": losses.alignment(z_s, z_t, cfg.align_alpha),
            "unif": 0.5 * (unif_s + unif_t), "unif_student": unif_s, "unif_teacher": unif_t,
            "aft": losses.aft(g, phi, rho, cfg.aft_kernel),
            "feature_kd": losses.feature_kd(g, phi, fk["kernel"], fk["bias"])}

  terms = {k: float(v) for k, v in distillation_terms(
      logits, t_logits, g, phi, z_s.astype(np.float32), z_t.astype(np.float32), aux["rho"],
      aux["feature_kd"]).items()}
  terms["ce"] = float(-np.mean(log_p[np.arange(16), labels]))
  for k, v in terms.items():
    assert metrics[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k
  weighted = [k for k in terms if not k.startswith("unif_")]
  total = sum(float(cfg[f"{k}_weight"]) * terms[k] for k in weighted)
  assert metrics["loss"] == pytest.approx(total, rel=1e-5, abs=1e-5)
  # No term is near 0, so a term left out or weighted wrongly moves the total by more than 1e-5.
  assert min(abs(terms[k]) for k in weighted) > 1e-3


def test_cache_holds_the_teachers_outputs_on_each_seeded_view(cached_runs, teacher_dirs,
                                                             tfds_dir):
  root, _ = cached_runs
  k = CACHED["teacher.cache_views"]
  records = [r for n in _shard_names(root / "cache_after_run1")
             for r in _records(root / "cache_after_run1" / n)]
  pairs = sorted((r["position"], r["view"]) for r in records)
  assert pairs == [(p, v) for p in range(200) for v in range(k)]  # each view exactly once
  by_position = {r["position"]: r["row"] for r in records}
  rows = [by_position[p] for p in range(200)]
  assert rows == sorted(set(rows))  # distinct training rows, in order
  assert all(r["aug_seed"] == r["row"] * k + r["view"] for r in records)
  chosen = [r for r in records if r["position"] in (0, 1, 63, 64, 130, 199)]
  config = _config(tfds_dir, **CACHED)
  images, _ = sources.open_source(config.data, config.data.train_split).read(
      [r["row"] for r in chosen])
  keys = jnp.stack([jax.random.key(int(r["row"]) * k + int(r["view"])) for r in chosen])
  views = jax.jit(lambda x, k: augment.augment_keys(x, k, config.data))(images, keys)
  teacher = pretrained.load(teacher_dirs["ten"])
  out = jax.jit(teacher.apply)(teacher.variables,
                               _teacher_pixels(_to_pixels(views, config.data), TEACHER_SIZE))
  np.testing.assert_allclose(np.stack([r["features"] for r in chosen]), out["features"],
                             atol=1e-5)
  np.testing.assert_allclose(np.stack([r["logits"] for r in chosen]), out["logits"][:, None],
                             atol=1e-5)
  # The two views of an image differ (they are different augmentations).
  first = {(r["position"], r["view"]): r["features"] for r in chosen}
  assert not np.allclose(first[0, 0], first[0, 1])


def test_cache_is_reused_without_rewriting_and_refuses_other_views(cached_runs):
  _, log = cached_runs
  shards = sorted(n for n in log["after_run1"] if n.endswith(".array_record"))
  assert len(shards) == 4
  # run3: the same setup, one shard deleted: every other file is reused as it is (same mtime,
  # inode and size) and gives the same training.
  for name in shards:
    if name != log["deleted"]:
      assert log["after_run3"][name] == log["after_run1"][name], name
  for key in ("test/accuracy", "test/loss", "test/teacher_accuracy", "test/agreement"):
    assert log["run3"][key] == log["run1"][key], key
  # run2: K=3 views on a K=2 cache is refused, naming the fix, and changes nothing.
  assert "run2_error" in log, "cache_views=3 on a K=2 cache was not refused"
  kind, error = log["run2_error"]
  assert kind == teacher_cache.TeacherCacheError.__name__, (kind, error)
  assert "views" in error and "delete that directory" in error and "teacher.cache_dir" in error
  assert log["after_run2"] == log["after_run1"]


def test_one_step_on_eight_devices_equals_one(one_step, teacher_dirs, tmp_path):
  out = str(tmp_path / "eight.msgpack")
  code = ("import sys; sys.path[:0] = ['tests', 'tests/integration']; import test_distill; "
          f"test_distill._run_step({teacher_dirs['ten']!r}, {out!r})")
  proc = run_python(code, env_extra=EIGHT_DEVICES)
  assert proc.returncode == 0, proc.stderr[-3000:]
  eight = _read(out)
  assert (one_step["devices"], eight["devices"]) == (1, 8)
  for k, v in one_step["metrics"].items():
    assert eight["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-5), k
  one_after, eight_after = _leaves(one_step["after"]), _leaves(eight["after"])
  assert one_after.keys() == eight_after.keys()
  worst = max(float(np.max(np.abs(one_after[k] - eight_after[k]))) for k in one_after)
  assert worst < 1e-5, worst


def test_teacher_outputs_carry_no_gradient(one_step, teacher_dirs):
  """Every distillation term is constant in the teacher's variables (stop_gradient), while the
  same KD term on the bare teacher logits is not (so this test can fail)."""
  config = _config("", **STEP)
  teacher = pretrained.load(teacher_dirs["ten"])
  distiller = objective.Distiller(config.loss, [teacher_views.view_of(teacher)], NUM_CLASSES, 64,
                                config.data.mean, config.data.std)
  rng = np.random.RandomState(2)
  images, _ = _batch()
  batch = {"image": _normalise(images, config.data)}
  g, logits = rng.randn(16, 64).astype(np.float32), rng.randn(16, NUM_CLASSES).astype(np.float32)
  aux = one_step["before"]["aux"]
  pixels = _teacher_pixels(images, TEACHER_SIZE)

  def through_distiller(tv):
    terms, _, _ = distiller.terms(aux, {}, batch, g, logits, distiller.outputs_for(tv, batch),
                                  jax.random.key(0))
    assert set(terms) == {"kd", "align", "unif", "aft", "feature_kd"}
    return sum(terms.values())

  def bare(head, tv):  # the teacher's head only: a cheap backward pass
    tv = {**tv, "params": {**tv["params"], "classifier": head}}
    return losses.kd_kl(logits, teacher.apply(tv, pixels)["logits"])

  tv = teacher.variables
  grads, bare_grads = jax.jit(lambda tv: (jax.grad(through_distiller)([tv]),
                                          jax.grad(bare)(tv["params"]["classifier"], tv)))(tv)
  assert all(np.all(v == 0) for v in _leaves(grads).values())
  assert all(np.any(v != 0) for v in _leaves(bare_grads).values())


def test_to_teacher_pixels_equals_preprocessing_the_uint8_image(teacher_dirs):
  teacher = pretrained.load(teacher_dirs["ten"])
  view = teacher_views.view_of(teacher)
  assert (view.image_size, view.mean, view.std) == (TEACHER_SIZE, TEACHER_MEAN, TEACHER_STD)
  assert view.rescale == pytest.approx(1 / 255)
  assert (view.num_features, view.num_logits) == (32, NUM_CLASSES)
  config = _config("", **{"data.mean": (0.49, 0.48, 0.45), "data.std": (0.25, 0.24, 0.26)})
  images = np.random.RandomState(3).randint(0, 256, (4, *IMAGE_SHAPE)).astype(np.uint8)
  student = jnp.asarray(_normalise(images, config.data))
  # up (the teacher's 12 x 20), the same size (no resize), down (antialiased)
  for size in (TEACHER_SIZE, IMAGE_SHAPE[:2], (5, 3)):
    got = teacher_views.to_teacher_pixels(student, config.data.mean, config.data.std,
                                    dataclasses.replace(view, image_size=size))
    assert got.shape == (4, *size, 3)
    np.testing.assert_allclose(got, _teacher_pixels(images, size), atol=1e-5, err_msg=str(size))


def test_kd_with_a_teacher_head_of_other_classes_names_the_adapt_config(tfds_dir, teacher_dirs,
                                                                        tmp_path):
  config = _config(tfds_dir, **{"loss.kd_weight": 1.0, "teacher.models": teacher_dirs["five"]})
  with pytest.raises(ValueError, match=r"configs/adapt\.py") as info:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert "(5 classes)" in str(info.value) and f"{NUM_CLASSES} classes" in str(info.value)
  assert not (tmp_path / "checkpoints").exists()  # refused before any training


def test_cached_batches_pair_each_augmented_image_with_its_views_outputs(cached_runs,
                                                                        teacher_dirs, tfds_dir):
  """In training, the teacher outputs that come with an image are the teacher's outputs on
  exactly that augmented image (whichever of its K views the epoch drew)."""
  root, _ = cached_runs
  config = _config(tfds_dir, **CACHED, **{"teacher.models": teacher_dirs["ten"],
                                         "teacher.cache_dir": str(root / "cache_after_run1")})
  mesh = shd.make_mesh()
  data = pipeline.build(config.data, mesh, config.seed, config.batch_size,
                        config.eval_batch_size)
  loaded, records = teachers.load(config)
  distiller = objective.Distiller(config.loss, [teacher_views.view_of(t) for t in loaded],
                                  NUM_CLASSES, 64, config.data.mean, config.data.std, cached=True)
  cache, _ = teacher_cache.build(config, str(root / "run1"), data.train, distiller,
                                 [t.variables for t in loaded], records, mesh)
  data.train.attach_cache(cache)
  teacher = pretrained.load(teacher_dirs["ten"])
  forward = jax.jit(teacher.apply)
  for step in (0, data.train.steps_per_epoch):  # two epochs: other permutations, other views
    batch = data.train.batch(step, jax.random.key(0))
    out = forward(teacher.variables,
                  _teacher_pixels(_to_pixels(batch["image"], config.data), TEACHER_SIZE))
    np.testing.assert_allclose(batch["teacher_features"], out["features"], atol=1e-5)
    np.testing.assert_allclose(batch["teacher_logits"], out["logits"][:, None], atol=1e-5)


def test_a_deleted_shard_is_recomputed_alone_and_identically(cached_runs):
  root, log = cached_runs
  deleted = log["deleted"]
  assert log["after_run3"][deleted][:2] != log["after_run1"][deleted][:2]  # written again
  with open(root / "cache" / deleted, "rb") as a, \
       open(root / "cache_after_run1" / deleted, "rb") as b:
    assert a.read() == b.read()  # byte for byte
  others = [n for n in log["after_run1"] if n.endswith(".array_record") and n != deleted]
  assert all(log["after_run3"][n] == log["after_run1"][n] for n in others)  # only it


def test_cost_record_of_a_cached_run(cached_runs):
  root, _ = cached_runs
  with open(root / "run1" / "cost.json") as f:
    cost = json.load(f)
  assert cost["teacher_cache_flops"] > 0 and cost["teacher_cache_wall_time_s"] > 0
  assert cost["online_teacher_flops_per_train_step"] > cost["flops_per_train_step"] > 0
  # What caching saves per step (16 teacher forwards) matches what the cache cost per view
  # (per shard, its 2 views per image in padded batches of 32), within a factor of 1.5.
  k, n, batch = CACHED["teacher.cache_views"], 200, 32
  batches = sum(-(-min(CACHE_SHARD, n - s) * k // batch) for s in range(0, n, CACHE_SHARD))
  saved_per_image = (cost["online_teacher_flops_per_train_step"]
                     - cost["flops_per_train_step"]) / 16
  cache_per_view = cost["teacher_cache_flops"] / (batches * batch)
  assert 1 / 1.5 < saved_per_image / cache_per_view < 1.5


def test_cache_progress_log_reports_the_real_rate(cached_runs):
  root, log = cached_runs
  progress = [m for m in log["run1_messages"] if re.match(r"teacher cache: \d+/\d+ batches", m)]
  assert progress, log["run1_messages"]
  logged = float(re.search(r"([\d.]+) views/s", progress[-1]).group(1))
  with open(root / "run1" / "cost.json") as f:
    wall = json.load(f)["teacher_cache_wall_time_s"]  # 4 shards, 400 views (416 padded)
  assert logged < 3 * 416 / wall, (logged, 416 / wall)


def test_teacher_fidelity_metrics_match_an_independent_evaluation(cached_runs, teacher_dirs,
                                                                  tfds_dir):
  root, log = cached_runs
  config = _config(tfds_dir, **CACHED)
  model, variables = _final_student(root, config)
  source = sources.open_source(config.data, config.data.test_split)
  images, labels = source.read(np.arange(len(source)))
  view = np.asarray(augment.preprocess_eval(images, config.data))  # the exact eval view
  student_logits = np.asarray(_predict(model)(variables, view)[0])
  student = np.argmax(student_logits, -1)
  teacher = pretrained.load(teacher_dirs["ten"])
  t_logits = np.asarray(jax.jit(teacher.apply)(
      teacher.variables, _teacher_pixels(_to_pixels(view, config.data), TEACHER_SIZE))["logits"])
  teacher_pred = np.argmax(t_logits, -1)
  # Examples whose top-2 logits are within float noise may flip between this computation and
  # the trainer's (other batching): each may move a metric by 1/360 (none expected).
  near = sum(int(np.sum(np.diff(np.sort(x, -1)[:, -2:], axis=-1) < 1e-4))
             for x in (t_logits, student_logits))
  metrics = log["run1"]
  assert metrics["test/count"] == len(labels) == 360
  top5 = np.argsort(-student_logits, -1)[:, :5]
  for key, value in [("test/accuracy", np.mean(student == labels)),
                     ("test/teacher_accuracy", np.mean(teacher_pred == labels)),
                     ("test/agreement", np.mean(teacher_pred == student)),
                     ("test/agreement_top5", np.mean(np.any(top5 == teacher_pred[:, None], -1)))]:
    assert abs(metrics[key] - float(value)) <= near / 360, key
  # KL(teacher || student) at T=1, float64 from the logits
  t_log = t_logits - np.log(np.sum(np.exp(t_logits - t_logits.max(-1, keepdims=True)), -1,
                                   keepdims=True)) - t_logits.max(-1, keepdims=True)
  s_log = student_logits - np.log(np.sum(np.exp(
      student_logits - student_logits.max(-1, keepdims=True)), -1, keepdims=True)) - \
      student_logits.max(-1, keepdims=True)
  kl = np.mean(np.sum(np.exp(t_log) * (t_log - s_log), -1))
  assert metrics["test/kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6)


def test_a_kdjax_run_loads_as_a_teacher_with_its_students_logits(cached_runs, tfds_dir):
  root, _ = cached_runs
  config = _config(tfds_dir, **CACHED)
  model, variables = _final_student(root, config)
  teacher = pretrained.load(str(root / "run1"))  # its latest checkpoint: the final state
  x = np.random.RandomState(4).randn(6, *IMAGE_SHAPE).astype(np.float32)
  logits, out = _predict(model)(variables, x)
  got = jax.jit(teacher.apply)(teacher.variables, x)
  np.testing.assert_allclose(got["logits"], logits, atol=1e-5)
  np.testing.assert_allclose(got["features"], out["pre_logits"], atol=1e-5)
  assert teacher.image_size == IMAGE_SHAPE[:2]
  assert teacher.preprocess.mean == tuple(config.data.mean)
  assert teacher.preprocess.std == tuple(config.data.std)
  # ... and it serves as a KD teacher of the same task.
  view = teacher_views.view_of(teacher)
  assert (view.num_logits, view.num_features) == (NUM_CLASSES, _student_features(model))
  distiller = objective.Distiller(config.loss, [view], NUM_CLASSES, 64, config.data.mean,
                                config.data.std)
  assert distiller.kd_teachers == [0]


def test_cached_streaming_run_resumes_to_the_in_memory_runs_state(cached_runs, teacher_dirs,
                                                                   tfds_dir, tmp_path):
  """A cached distillation run (state.aux: rho; the views drawn per epoch) killed after its
  step-2 checkpoint and resumed, reading images from disk (data.in_memory=False), ends where
  run1 (in memory, uninterrupted, same cache) ended."""
  root, _ = cached_runs
  config = _config(tfds_dir, **CACHED, **{"teacher.models": teacher_dirs["ten"],
                                         "teacher.cache_dir": str(root / "cache"),
                                         "data.in_memory": False})
  trainer.train_and_evaluate(config, str(tmp_path))
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if killed after the step-2 checkpoint
  resumed = trainer.train_and_evaluate(config, str(tmp_path)).state
  assert "rho" in resumed.aux
  want = _leaves(_read(root / "run1_state.msgpack"))
  got = _leaves({"params": resumed.params, "batch_stats": resumed.batch_stats})
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6, err_msg=k)
