"""The rows `python -m kdjax.tools.bench` measures (kdjax/tools/bench.py is its command line and
report): the teacher architectures and loss sets, kdjax's jitted steps (`Bench`), the random Hub
teachers, the row builders that put each kdjax call beside its PyTorch eager twin (`Rows`), and
the timers."""

import dataclasses
import os
import platform
import statistics
import tempfile
import time

import flax
import jax
import ml_collections

from kdjax import models, optim, steps
from kdjax import sharding as shd
from kdjax.distill import objective, teacher_views
from kdjax.hf import pretrained
from kdjax.tools import torch_reference as ref

ARCHITECTURES = {  # family -> (HF class, Hub checkpoint whose config.json shape is used, kwargs)
    "resnet50": ("ResNetForImageClassification", "microsoft/resnet-50", dict(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
        layer_type="bottleneck")),
    "vit_b16": ("ViTForImageClassification", "google/vit-base-patch16-224", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16)),
    "dinov2_b14": ("Dinov2Model", "facebook/dinov2-base", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
        image_size=518, patch_size=14, layerscale_value=1.0)),
    "clip_b16": ("CLIPVisionModelWithProjection", "openai/clip-vit-base-patch16", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu")),
    "mobilenet_v2": ("MobileNetV2ForImageClassification", "google/mobilenet_v2_1.0_224", dict(
        depth_multiplier=1.0, image_size=224, tf_padding=True)),
}
HEADLESS = ("dinov2_b14", "clip_b16")  # no classification head: no KD term, no logits
LOSSES = {  # name -> non-CE weights (every other distillation weight set to 0); None: as config
    "ce": {},
    "paper_a": dict(kd_weight=1.0, align_weight=1.0, unif_weight=1.0),
    "aft": dict(aft_weight=1.0),
    "feature_kd": dict(feature_kd_weight=1.0),
    "kd": dict(kd_weight=1.0),
    "config": None,
}
ROW_KINDS = ("student", "teacher", "online", "cached")

# ------------------------------------------------------------------------------ timers


def machine_info() -> dict:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  flags = set()
  try:
    with open("/proc/cpuinfo") as f:
      flags = set(next((line.split(":", 1)[1].split() for line in f
                        if line.startswith("flags")), []))
  except OSError:
    pass
  d = jax.devices()[0]
  info = {"platform": d.platform, "device_kind": getattr(d, "device_kind", ""),
          "num_devices": jax.device_count(), "cpu": cpu, "cpus": os.cpu_count(),
          # the vector units that decide CPU speed here (lscpu's flags)
          "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                                       "fma"}),
          "python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    pass
  return info


def time_calls(fn, steps: int, warmup: int) -> dict:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return {"seconds": statistics.median(times), "min_seconds": min(times), "all_seconds": times}


@dataclasses.dataclass
class Pending:
  """A row built and warmed up, timed later: its calls ("kdjax", "torch/LAYOUT") -> closure."""

  name: str
  kind: str
  batch: int
  calls: dict
  flops: float
  extra: dict


def interleaved(pending: list[Pending], steps: int) -> list[dict]:
  """Times every call of every row once per round, `steps` rounds: a machine whose speed drifts
  (shared CPUs, clocks, thermals) then slows every row alike, so rows and the kdjax/torch ratio
  within a row stay comparable. Returns per row {call name: time_calls-like record}."""
  samples = [{k: [] for k in p.calls} for p in pending]
  for _ in range(steps):
    for p, out in zip(pending, samples):
      for k, fn in p.calls.items():
        t = time.perf_counter()
        fn()
        out[k].append(time.perf_counter() - t)
  return [{k: {"seconds": statistics.median(v), "min_seconds": min(v), "all_seconds": v}
           for k, v in out.items()} for out in samples]


def sequential(pending: list[Pending], steps: int) -> list[dict]:
  """Times each row's calls `steps` times, one row after another (rows already warmed up)."""
  return [{k: time_calls(fn, steps, 0) for k, fn in p.calls.items()} for p in pending]


# ------------------------------------------------------------------------------ teachers, losses


def save_random_teacher(family: str, directory: str, num_classes: int):
  """The family's architecture with random weights, saved as a Hub checkpoint directory; returns
  the PyTorch model (the reference)."""
  import torch
  import transformers

  cls_name, _, kwargs = ARCHITECTURES[family]
  cls = getattr(transformers, cls_name)
  kwargs = dict(kwargs)
  if family not in HEADLESS:
    kwargs["num_labels"] = num_classes
  torch.manual_seed(0)
  model = cls(cls.config_class(**kwargs)).eval()
  model.save_pretrained(directory)
  return model


def loss_config(config, name: str):
  loss = ml_collections.ConfigDict(config.loss.to_dict())
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
  if LOSSES[name] is not None:
    for term in ("kd", "align", "unif", "aft", "feature_kd"):
      loss[f"{term}_weight"] = 0.0
    loss.update(LOSSES[name])
  return loss


def _for_teacher(loss, family):
  """KD needs a task head: headless families (DINOv2, CLIP) drop the KD term."""
  if family in HEADLESS:
    loss.kd_weight = 0.0
  return loss


# ------------------------------------------------------------------------------ kdjax's steps


class Bench:
  """Builds and times kdjax's jitted steps for one config (all rows share model and batch)."""

  def __init__(self, config, batch: int, num_classes: int):
    self.config, self.batch, self.num_classes = config, batch, num_classes
    self.mesh = shd.make_mesh()
    shd.check_global_batch(batch, self.mesh, "--batch")
    self.repl, self.batch_sh = shd.replicated(self.mesh), shd.batch_sharding(self.mesh)
    self.model = models.build(config.model, num_classes)
    s = config.data.image_size
    self.image_shape = (s, s, 3)
    (_, out), _ = jax.eval_shape(
        lambda: self.model.init_with_output(jax.random.key(0), jax.numpy.zeros((1, s, s, 3))))
    self.student_features = int(out["pre_logits"].shape[-1])
    k1, k2 = jax.random.split(jax.random.key(1))
    self.batch_arrays = {
        "image": jax.device_put(jax.random.normal(k1, (batch, s, s, 3)), self.batch_sh),
        "label": jax.device_put(jax.random.randint(k2, (batch,), 0, num_classes), self.batch_sh)}

  def train_step(self, loss, views=(), mode="student", teacher_vars=()):
    """(one-call closure, XLA FLOPs per call) of the trainer's train step."""
    config = self.config
    distiller = None
    if mode != "student":
      distiller = objective.Distiller(loss, list(views), self.num_classes, self.student_features,
                                      config.data.mean, config.data.std, cached=mode == "cached")
    tx = optim.build(config.optimizer, optim.schedule(config.optimizer, 1000, 100),
                     loss.prior_learning_rate)
    init = lambda key: steps.create_train_state(self.model, tx, self.image_shape, key,  # noqa: E731
                                                distiller=distiller)
    state = jax.jit(init, out_shardings=self.repl)(jax.random.key(0))
    step = jax.jit(steps.make_train_step(self.model, tx, loss, self.num_classes, distiller),
                   donate_argnums=0)
    batch = dict(self.batch_arrays)
    if mode == "cached":
      k1, k2 = jax.random.split(jax.random.key(2))
      batch["teacher_features"] = jax.device_put(jax.random.normal(
          k1, (self.batch, distiller.num_teacher_features)), self.batch_sh)
      if distiller.kd_teachers:
        batch["teacher_logits"] = jax.device_put(jax.random.normal(
            k2, (self.batch, 1, self.num_classes)), self.batch_sh)
    tv = list(teacher_vars) if mode == "online" else []
    key = jax.random.key(3)
    flops = steps.xla_flops(step, state, batch, key, {}, tv)
    holder = [state]

    def call():
      holder[0], metrics = step(holder[0], batch, key, {}, tv)
      jax.block_until_ready(metrics)

    return call, flops

  def teacher_forward(self, teacher, batch: int):
    h, w = teacher.image_size
    x = jax.device_put(jax.random.normal(jax.random.key(4), (batch, h, w, 3)), self.batch_sh)
    forward = jax.jit(teacher.apply)
    flops = steps.xla_flops(forward, teacher.variables, x)
    return (lambda: jax.block_until_ready(forward(teacher.variables, x))), flops


# ------------------------------------------------------------------------------ row builders


class Rows:
  """Builds and warms up the rows, each kdjax call beside its PyTorch twin (none when
  `torch_device` is None; the student row in every layout of `layouts`, the others in the first);
  `pending` holds them in build order, to be timed together."""

  def __init__(self, bench: Bench, warmup: int, torch_device: str | None, layouts: list[str]):
    self.bench, self.config = bench, bench.config
    self.warmup, self.torch_device, self.layouts = warmup, torch_device, layouts
    self.pending: list[Pending] = []

  def measure(self, name, kind, n, call, flops, torch_calls=None, **extra):
    calls = {"kdjax": call, **{f"torch/{lay}": fn for lay, fn in (torch_calls or {}).items()}}
    for fn in calls.values():
      for _ in range(self.warmup):  # compiles and warms up now, times later
        fn()
    self.pending.append(Pending(name, kind, n, calls, flops, extra))
    print(f"built {name}", flush=True)

  def _torch_steps(self, layouts, **kw) -> dict | None:
    """layout -> the reference's train step, or None without the reference."""
    if self.torch_device is None:
      return None
    return {lay: ref.make_step(self.config, self.bench.num_classes, self.bench.batch,
                               device=self.torch_device, channels_last=lay == "channels_last",
                               bf16=self.config.model.dtype == "bfloat16", **kw)
            for lay in layouts}

  def student(self):
    call, flops = self.bench.train_step(loss_config(self.config, "ce"))
    tc = self._torch_steps(self.layouts, weights={"ce": float(self.config.loss.ce_weight)})
    self.measure(f"student {self.config.model.name} (CE)", "student", self.bench.batch, call,
                 flops, tc)

  def teacher(self, family, teacher, torch_model, batch: int, size):
    call, flops = self.bench.teacher_forward(teacher, batch)
    tc = {"nchw": ref.make_teacher_forward(
        torch_model, batch, size, self.torch_device,
        self.config.teacher.dtype == "bfloat16")} if self.torch_device is not None else None
    self.measure(f"teacher {family} forward", "teacher", batch, call, flops, tc,
                 family=family, checkpoint=ARCHITECTURES[family][1])

  def online(self, family, loss_name, teacher, torch_model, view):
    loss = _for_teacher(loss_config(self.config, loss_name), family)
    call, flops = self.bench.train_step(loss, [view], "online", [teacher.variables])
    tc = self._torch_steps(self.layouts[:1], weights=objective.weights(loss),
                           teacher=torch_model, view=view)
    self.measure(f"{loss_name}, {family} online", "online", self.bench.batch, call, flops, tc,
                 family=family, loss=objective.weights(loss))

  def cached(self, family, loss_name, view):
    loss = _for_teacher(loss_config(self.config, loss_name), family)
    call, flops = self.bench.train_step(loss, [view], "cached")
    dims = (view.num_features, family not in HEADLESS and "kd" in objective.weights(loss))
    tc = self._torch_steps(self.layouts[:1], weights=objective.weights(loss), cached_dims=dims)
    self.measure(f"{loss_name}, {family} cached", "cached", self.bench.batch, call, flops, tc,
                 family=family, loss=objective.weights(loss))

  def teachers(self, families, kinds, size: int, batch: int, online_losses, cached_losses):
    """The teacher, online and cached rows (those in `kinds`) of each family, its random teacher
    at `size` px; the cached rows read the first family's outputs only."""
    with tempfile.TemporaryDirectory() as tmp:
      for i, family in enumerate(families):
        path = os.path.join(tmp, family)
        torch_model = save_random_teacher(family, path, self.bench.num_classes)
        teacher = pretrained.load(path, dtype=self.config.teacher.dtype, mesh=self.bench.mesh)
        teacher.preprocess = dataclasses.replace(teacher.preprocess, crop=None,
                                                 resize=("square", (size, size)))
        view = teacher_views.view_of(teacher)
        if "teacher" in kinds:
          self.teacher(family, teacher, torch_model, batch, (size, size))
        for loss_name in online_losses if "online" in kinds else []:
          self.online(family, loss_name, teacher, torch_model, view)
        for loss_name in cached_losses if "cached" in kinds and i == 0 else []:
          self.cached(family, loss_name, view)
        del torch_model, teacher
