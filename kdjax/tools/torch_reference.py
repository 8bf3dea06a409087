"""The PyTorch eager reference of kdjax's train steps, for `python -m kdjax.tools.bench` only.

The same step as kdjax's trainer, written the way a PyTorch user would: the students
(ResNet-18/34 with the CIFAR or ImageNet stem, MobileNetV2 with CIFAR strides) as torch.nn
modules with kdjax's layouts (same parameter counts; tests/test_bench.py), the teachers as the
Hugging Face PyTorch models, and the loss terms of kdjax/losses (CE, KD, paper A's projection
heads + alignment + uniformity, AFT's R with a diagonal rho, feature-KD). Eager mode, fp32 on
CPU (channels_last or NCHW), bf16 autocast on a GPU when kdjax computes in bf16. Nothing here is
used for training: it exists so the kdjax/PyTorch ratio is measured side by side.

Needs torch==2.13.0 (requirements-bench.txt; never an unpinned torch) and transformers.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def _make_divisible(value, divisor=8):
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.down = None
    if stride != 1 or cin != cout:
      self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
  """kdjax.models.students.resnet.ResNet in torch: forward -> (logits, pre_logits)."""

  def __init__(self, num_classes, stage_sizes=(2, 2, 2, 2), width=64, stem="cifar"):
    super().__init__()
    if stem == "cifar":
      layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    else:
      layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        layers.append(BasicBlock(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
        cin = width * 2**i
    self.body = nn.Sequential(*layers)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    f = self.body(x).mean((2, 3))
    return self.head(f), f


def _conv_bn(cin, cout, k, stride=1, groups=1, act=True):
  layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]
  return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
  def __init__(self, cin, cout, stride, t):
    super().__init__()
    hidden = int(round(cin * t))
    layers = [_conv_bn(cin, hidden, 1)] if t != 1 else []
    layers += [_conv_bn(hidden, hidden, 3, stride, hidden), _conv_bn(hidden, cout, 1, act=False)]
    self.body = nn.Sequential(*layers)
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
  """kdjax.models.students.mobilenet_v2.MobileNetV2 in torch: forward -> (logits, pre_logits)."""

  SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))

  def __init__(self, num_classes, width_multiplier=1.0, cifar_strides=True, dropout=0.2):
    super().__init__()
    wm = width_multiplier
    cin = _make_divisible(32 * wm)
    layers = [_conv_bn(3, cin, 3, 1 if cifar_strides else 2)]
    first = True
    for t, c, n, s in self.SETTING:
      if s == 2 and first:
        first, s = False, (1 if cifar_strides else s)
      for j in range(n):
        cout = _make_divisible(c * wm)
        layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
        cin = cout
    last = _make_divisible(1280 * max(1.0, wm))
    layers.append(_conv_bn(cin, last, 1))
    self.body = nn.Sequential(*layers)
    self.dropout = nn.Dropout(dropout)
    self.head = nn.Linear(last, num_classes)

  def forward(self, x):
    f = self.body(x).mean((2, 3))
    return self.head(self.dropout(f)), f


def student(model_cfg, num_classes: int) -> nn.Module:
  """The torch twin of `kdjax.models.build(model_cfg, num_classes)`."""
  if model_cfg.pretrained:
    raise ValueError("the PyTorch reference builds randomly initialised students only")
  if model_cfg.name in ("resnet18", "resnet34"):
    sizes = (2, 2, 2, 2) if model_cfg.name == "resnet18" else (3, 4, 6, 3)
    return ResNet(num_classes, sizes, model_cfg.width, model_cfg.stem)
  if model_cfg.name == "mobilenet_v2":
    return MobileNetV2(num_classes, model_cfg.width_multiplier, model_cfg.cifar_strides,
                       model_cfg.dropout_rate)
  raise ValueError(f"no PyTorch reference for student {model_cfg.name!r}; "
                   "valid: ['mobilenet_v2', 'resnet18', 'resnet34']")


def teacher_forward(model: nn.Module):
  """An HF PyTorch vision model -> fn(pixels NCHW) -> (features, logits or None), with
  `features` the vector kdjax's port calls `features` (what the classification head reads)."""
  kind = model.config.model_type
  if kind == "resnet":
    def fn(px):
      f = model.resnet(px).pooler_output.flatten(1)
      return f, model.classifier(f)
  elif kind == "vit":
    def fn(px):
      f = model.vit(px).last_hidden_state[:, 0]
      return f, model.classifier(f)
  elif kind == "mobilenet_v2":
    def fn(px):
      f = model.mobilenet_v2(px).pooler_output
      return f, model.classifier(model.dropout(f))
  elif kind == "dinov2":
    def fn(px):
      return model(px).pooler_output, None
  elif kind == "clip_vision_model":
    def fn(px):
      f = model.vision_model(px).pooler_output
      model.visual_projection(f)  # kdjax's port computes image_embeds as well
      return f, None
  else:
    raise ValueError(f"no PyTorch reference forward for model_type {kind!r}")
  return fn


class Head(nn.Module):
  """Paper A's projection head (mlp or linear), L2-normalised."""

  def __init__(self, d, kind, dim):
    super().__init__()
    self.net = (nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, dim)) if kind == "mlp"
                else nn.Linear(d, dim))

  def forward(self, x):
    return F.normalize(self.net(x.float()), dim=-1)


def uniformity(z, t):
  return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()


def aft(g, phi, rho_logits):
  """Paper B's R with a diagonal rho and the linear kernel (kdjax/losses/aft.py)."""
  def centre_normalise(x):
    x = x - x.mean(0, keepdim=True)
    return x / (x.norm(dim=-1, keepdim=True) + 1e-8)

  g = centre_normalise(g.float())
  p = centre_normalise(phi.float() * torch.sigmoid(rho_logits))
  return torch.sqrt(((g @ g.T - p @ p.T) ** 2).mean() + 1e-8)


class Objective(nn.Module):
  """The trainable distillation extras and the weighted loss of kdjax/distill/objective.py."""

  def __init__(self, loss_cfg, weights: dict, d_student: int, d_teacher: int):
    super().__init__()
    self.cfg, self.w = loss_cfg, weights
    if "align" in weights or "unif" in weights:
      self.student_proj = Head(d_student, loss_cfg.proj_head, loss_cfg.proj_dim)
      self.teacher_proj = Head(d_teacher, loss_cfg.proj_head, loss_cfg.proj_dim)
    if "aft" in weights:
      self.rho = nn.Parameter(torch.zeros(d_teacher))
    if "feature_kd" in weights:
      self.feature_kd = nn.Linear(d_student, d_teacher)

  def prior_parameters(self):
    return [p for n, p in self.named_parameters() if n.startswith(("rho", "feature_kd"))]

  def forward(self, logits, g, labels, phi=None, t_logits=None):
    cfg, w = self.cfg, self.w
    terms = {"ce": F.cross_entropy(logits.float(), labels,
                                   label_smoothing=cfg.label_smoothing)}
    if "kd" in w:
      t = cfg.kd_temperature
      terms["kd"] = t * t * F.kl_div(F.log_softmax(logits.float() / t, -1),
                                     F.log_softmax(t_logits.float() / t, -1),
                                     reduction="batchmean", log_target=True)
    if "align" in w or "unif" in w:
      z_s, z_t = self.student_proj(g), self.teacher_proj(phi)
      if "align" in w:
        terms["align"] = (z_s - z_t).pow(2).sum(-1).pow(cfg.align_alpha / 2).mean()
      if "unif" in w:
        terms["unif"] = 0.5 * (uniformity(z_s, cfg.unif_t) + uniformity(z_t, cfg.unif_t))
    if "aft" in w:
      terms["aft"] = aft(g, phi, self.rho)
    if "feature_kd" in w:
      terms["feature_kd"] = F.mse_loss(self.feature_kd(g.float()), phi.float())
    return sum(w[k] * v for k, v in terms.items())


def optimizer(opt_cfg, model: nn.Module, objective: nn.Module, prior_lr: float):
  """kdjax/optim.py's optimizer in torch: decay on >1-D parameters only (unless
  decay_norm_and_bias), priors (rho, feature-KD map) at prior_lr without decay."""
  priors = {id(p) for p in objective.prior_parameters()}
  params = [p for p in [*model.parameters(), *objective.parameters()] if id(p) not in priors]
  decay = [p for p in params if p.ndim > 1 or opt_cfg.decay_norm_and_bias]
  no_decay = [p for p in params if not (p.ndim > 1 or opt_cfg.decay_norm_and_bias)]
  groups = [{"params": decay, "weight_decay": opt_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
  if priors:
    groups.append({"params": objective.prior_parameters(), "weight_decay": 0.0, "lr": prior_lr})
  lr = opt_cfg.learning_rate
  if opt_cfg.name == "sgd":
    return torch.optim.SGD(groups, lr=lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov)
  if opt_cfg.name == "adamw":
    return torch.optim.AdamW(groups, lr=lr, betas=(opt_cfg.b1, opt_cfg.b2))
  if opt_cfg.name == "adam":
    return torch.optim.Adam(groups, lr=lr, betas=(opt_cfg.b1, opt_cfg.b2))
  raise ValueError(f"unknown optimizer.name {opt_cfg.name!r}")


def to_teacher_pixels(x, data_mean, data_std, size, rescale, mean, std):
  """kdjax.distill.to_teacher_pixels in torch (NCHW): un-normalise, resize, re-normalise."""
  def col(v):
    return torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)

  px = (x.float() * col(data_std) + col(data_mean)) * 255.0
  if tuple(px.shape[2:]) != tuple(size):
    px = F.interpolate(px, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
  return (px * rescale - col(mean)) / col(std)


def make_step(config, num_classes, batch_size, weights: dict, teacher=None, view=None,
              cached_dims=None, device="cpu", channels_last=True, bf16=False, seed=0):
  """A zero-argument callable running one train step of the reference on a fixed batch.

  weights: {term: weight} (kdjax.distill.weights). teacher: an HF PyTorch model run online
  (with `view`, kdjax's TeacherView: its input size and normalisation); cached_dims:
  (feature width, has logits) to read the teacher's outputs from the batch instead.
  """
  torch.manual_seed(seed)
  s = config.data.image_size
  model = student(config.model, num_classes).to(device)
  x = torch.randn(batch_size, 3, s, s, device=device)
  y = torch.randint(0, num_classes, (batch_size,), device=device)
  if channels_last:
    model, x = model.to(memory_format=torch.channels_last), x.to(
        memory_format=torch.channels_last)
  d_student = model.head.in_features
  fwd, phi, t_logits = None, None, None
  if teacher is not None:
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
      p.requires_grad_(False)
    fwd = teacher_forward(teacher)
    d_teacher = view.num_features
  elif cached_dims is not None:
    d_teacher, has_logits = cached_dims
    phi = torch.randn(batch_size, d_teacher, device=device)
    t_logits = torch.randn(batch_size, num_classes, device=device) if has_logits else None
  else:
    d_teacher = 0
  objective = Objective(config.loss, weights, d_student, d_teacher).to(device)
  opt = optimizer(config.optimizer, model, objective, config.loss.prior_learning_rate)
  model.train()
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      logits, g = model(x)
      f, tl = phi, t_logits
      if fwd is not None:
        with torch.no_grad():
          px = to_teacher_pixels(x, config.data.mean, config.data.std, view.image_size,
                                 view.rescale, view.mean, view.std)
          f, tl = fwd(px)
      loss = objective(logits, g, y, f, tl)
    loss.backward()
    opt.step()
    if not math.isfinite(float(loss.detach())):  # a host sync, as kdjax's block_until_ready
      raise FloatingPointError("the PyTorch reference step produced a non-finite loss")

  return step


def make_teacher_forward(model, batch_size, size, device="cpu", bf16=False, seed=0):
  """A zero-argument callable: the HF model's eval forward on a fixed batch at `size` px."""
  torch.manual_seed(seed)
  model = model.to(device).eval()
  fwd = teacher_forward(model)
  x = torch.randn(batch_size, 3, *size, device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

  def run():
    with torch.no_grad(), autocast:
      f, _ = fwd(x)
    f.float().sum().item()  # waits for the device

  return run
