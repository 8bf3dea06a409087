"""Shared config defaults and the `get_config(arg)` argument parser used by configs/*.py.

A config file's `get_config(arg)` receives the text after ':' in
`--config=configs/name.py:runlocal,seed=3` and starts from `base()`, which lists every key a user
can tune (the config is locked by main.py, so a mistyped override fails and names the key).
`validate(config)` refuses unknown names and impossible values before the trainer reads or
writes anything; the valid names come from the tables of the modules that use them.
"""

import importlib.util

import ml_collections
from ml_collections import config_dict

from kdjax import errors

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# data.normalization: auto (a pre-trained model's own mean/std, see base()) | config
NORMALIZATIONS = ("auto", "config")
# adapt_config's modes: a linear probe of a new head on the frozen backbone | a full fine-tune
ADAPT_MODES = ("probe", "finetune")


def load_file(path: str, name: str = "_kdjax_config"):
  """The Python module of a config file (configs/*.py live outside the package), loaded by
  path and executed."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def teacher_names(config) -> list[str]:
  """The entries of `teacher.models` (comma-separated; empty ones dropped)."""
  return [n.strip() for n in config.teacher.models.split(",") if n.strip()]


def parse_arg(arg: str, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,seed=3' -> {runlocal: True, seed: 3}, typed by `defaults`; unknown keys fail."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise errors.UserError(f"unknown config argument {key!r}; valid: {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() in ("", "1", "true", "yes")
    else:
      out[key] = kind(value)
  return out


def shrink_for_local_run(c: ml_collections.ConfigDict,
                         image_size: int | None = None) -> ml_collections.ConfigDict:
  """The `runlocal` switch: a few small steps that exercise every code path on a CPU.
  `image_size`: also the images, loaded at 1.25x that size (a 224 px recipe at 32 px: 40)."""
  if image_size:
    c.data.image_size = image_size
    c.data.load_size = image_size * 5 // 4
  c.batch_size = 16
  c.eval_batch_size = 32
  c.total_epochs = None
  c.total_steps = 4
  c.log_every_steps = 2
  c.eval_every_steps = None
  c.checkpoint_every_steps = 2
  return c


def base() -> ml_collections.ConfigDict:
  """Every key of a trainer config, with its default (configs/*.py start from it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128  # global, over all devices and processes
  c.eval_batch_size = 256
  c.total_steps = config_dict.placeholder(int)
  c.total_epochs = config_dict.placeholder(float)
  c.log_every_steps = 50
  c.eval_every_steps = config_dict.placeholder(int)  # unset (and no epochs): at the end only
  c.eval_every_epochs = config_dict.placeholder(float)  # or every this many epochs
  c.checkpoint_every_steps = 1000
  c.max_to_keep = 3
  # CPU only: route convolutions to Eigen (an XLA flag set by kdjax.runtime before JAX starts).
  c.fast_cpu_convolutions = True
  c.model = _model()
  c.optimizer = _optimizer()
  c.loss = _loss()
  c.teacher = _teacher()
  c.data = _data()
  return c


def _model() -> ml_collections.ConfigDict:
  """The student (`model.*`)."""
  c = ml_collections.ConfigDict()
  # resnet18 | resnet34 | mobilenet_v2 | the CIFAR benchmark networks of RepDistiller and
  # mdistiller: resnet{8,14,20,32,44,56,110}, resnet8x4, resnet32x4, wrn_{16,40}_{1,2},
  # vgg{8,11,13,16,19} (kdjax/models/students/cifar.py)
  c.name = "resnet18"
  c.stem = "cifar"  # ResNet: cifar (3x3, no max-pool) | imagenet (7x7/2 + max-pool)
  c.width = 64  # ResNet: channels of the first stage (64 is the standard network)
  c.width_multiplier = 1.0  # MobileNetV2
  c.cifar_strides = True  # MobileNetV2: stride 1 in the stem and first stride-2 stage
  c.dropout_rate = 0.2  # MobileNetV2 classifier dropout
  # auto: kdjax's CPU convolution (kdjax/models/cpu_conv.py) on CPU, XLA's elsewhere | xla | cpu
  # | portable: decided where the compiled program runs (exported programs)
  c.conv_impl = "auto"
  c.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
  # Hub id or local directory: start from these weights (a kdjax Flax port of the HF model)
  # with a new head; model.name then says the family (resnet18, mobilenet_v2) or "hub" (any).
  c.pretrained = ""
  # model.name "hub" without pretrained weights: the architecture of this Hugging Face config
  # (a directory or Hub id with config.json, e.g. a small ResNet or ViT), randomly initialised.
  c.hub_config = ""
  c.freeze_backbone = False  # with pretrained: linear probe (backbone frozen, eval mode)
  # Frozen backbone parameters: replicate | fsdp (split over the devices, for huge teachers).
  c.param_sharding = "replicate"
  c.fsdp_min_size = 2**16  # fsdp: arrays with fewer values than this stay replicated
  return c


def _optimizer() -> ml_collections.ConfigDict:
  """The optimizer and its schedule (`optimizer.*`)."""
  c = ml_collections.ConfigDict()
  c.name = "sgd"  # sgd | adam | adamw
  c.learning_rate = 0.1
  c.schedule = "cosine"  # cosine | constant | multistep (decay_factor at each decay_epochs)
  c.decay_epochs = (150.0, 180.0, 210.0)  # multistep: mdistiller's CIFAR-100 recipe
  c.decay_factor = 0.1
  c.warmup_steps = config_dict.placeholder(int)
  c.warmup_epochs = config_dict.placeholder(float)
  c.momentum = 0.9
  c.nesterov = True
  c.b1 = 0.9
  c.b2 = 0.999
  c.weight_decay = 5e-4
  c.decay_norm_and_bias = False
  # Pre-trained backbone's learning rate = this x learning_rate (paper A fine-tune: 0.1).
  c.backbone_lr_scale = 1.0
  return c


def _loss() -> ml_collections.ConfigDict:
  """The objective: each term's weight and settings (`loss.*`; the terms: docs/distillation.md).
  The student's objective is the sum of weight x term (kdjax/losses); every term but CE needs
  teachers. Paper A: ce + kd + align + unif = 1 each; paper B: ce + aft."""
  c = ml_collections.ConfigDict()
  c.label_smoothing = 0.0
  c.ce_weight = 1.0
  c.kd_weight = 0.0  # Hinton KD on the teachers' (adapted) task heads
  c.kd_temperature = 4.0
  c.kd_multi_teacher = "mean_probs"  # several teachers: mean_probs | sum_kl
  c.align_weight = 0.0  # paper A alignment of projected, L2-normalised embeddings
  c.align_alpha = 2.0
  c.unif_weight = 0.0  # paper A uniformity, mean of the student's and the teacher's
  c.unif_t = 2.0
  c.proj_head = "mlp"  # paper A projection heads: mlp (Linear(d,d)-ReLU-Linear) | linear
  c.proj_dim = 128
  c.aft_weight = 0.0  # paper B: beta x R
  c.aft_kernel = "linear"  # linear | rbf | none (the no-kernel variant: a learned map V)
  c.aft_rho = "diagonal"  # diagonal (one weight per teacher feature) | dense (a matrix)
  c.feature_kd_weight = 0.0  # paper B's baseline: linear map student -> teacher, MSE
  # AFT's rho / dense map, feature-KD's map and FT's MLP: this learning rate (same optimizer
  # and schedule shape as the student, no weight decay); the reference code uses 1e-2.
  c.prior_learning_rate = 1e-2
  # Logit standardisation (Sun et al., arXiv 2403.01427): the z-score of the student's and the
  # teachers' logits before the temperature, in the kd and dkd terms
  c.kd_standardize = False
  c.dkd_weight = 0.0  # decoupled KD (Zhao et al., arXiv 2203.08679): alpha TCKD + beta NCKD
  c.dkd_alpha = 1.0
  c.dkd_beta = 8.0
  c.dkd_temperature = 4.0
  c.crd_weight = 0.0  # CRD (Tian et al., arXiv 1910.10699), paper A's baseline; its embedding
  c.crd_negatives = 4096  # heads are proj_head/proj_dim's; negatives from other classes
  c.crd_temperature = 0.07
  c.crd_momentum = 0.5  # of the memory bank's rows (the bank is checkpointed state)
  # SRRL (Yang et al., ICLR 2021), paper A's baseline: a connector maps the student's features
  # to the teacher's; srrl: MSE of the teacher's head on them vs the teacher's logits;
  # srrl_feature: MSE to the teacher's features
  c.srrl_weight = 0.0
  c.srrl_feature_weight = 0.0
  c.srrl_connector = "mlp2"  # mlp2: Linear-ReLU-Linear-ReLU (mid width) | mlp: Linear-ReLU
  # RKD (Park et al., arXiv 1904.05068), paper B's baseline: distance_w x distance + angle_w x
  # angle, paper B's reference (dist + 2 angle) / 2
  c.rkd_weight = 0.0
  c.rkd_distance_weight = 0.5
  c.rkd_angle_weight = 1.0
  c.ft_weight = 0.0  # factor transfer as paper B's reference: an MLP student -> teacher, L1
  # B-Tuning (You et al., arXiv 2110.10545), paper B's baseline: LogME weights fitted once;
  # teachers weighted by softmax(LogME score / btuning_temperature)
  c.btuning_weight = 0.0
  c.btuning_temperature = 0.1
  # Per-term linear warm-up of the weight over this many epochs (DKD: 20 in mdistiller)
  c.warmup_epochs = ml_collections.ConfigDict({t: 0.0 for t in WARMUP_TERMS})
  return c


# Terms whose weight can warm up (loss.warmup_epochs.<term>)
WARMUP_TERMS = ("kd", "dkd", "crd", "srrl", "srrl_feature", "rkd", "ft", "btuning", "align",
                "unif", "aft", "feature_kd")

# loss presets (`with_method`): every key of the preset's terms, the others' weights set to 0.
# Defaults from each method's reference code: docs/distillation.md cites them.
_ALL_WEIGHTS = WARMUP_TERMS
METHODS = {
    "ce": {},
    "kd": {"kd_weight": 1.0, "kd_temperature": 4.0},  # Hinton; mdistiller CIFAR: CE 0.1 KD 0.9
    "kd_ls": {"ce_weight": 0.1, "kd_weight": 9.0, "kd_temperature": 2.0,
              "kd_standardize": True},
    "dkd": {"dkd_weight": 1.0, "dkd_alpha": 1.0, "dkd_beta": 8.0, "dkd_temperature": 4.0,
            "warmup_epochs.dkd": 20.0},
    # logit-standardization-KD tools/train.py: DKD's alpha and beta x --kd-weight 9, T 2
    "dkd_ls": {"dkd_weight": 9.0, "dkd_alpha": 1.0, "dkd_beta": 8.0, "dkd_temperature": 2.0,
               "kd_standardize": True, "warmup_epochs.dkd": 20.0},
    "crd": {"crd_weight": 1.0, "kd_weight": 1.0, "proj_head": "mlp", "proj_dim": 128},
    "srrl": {"srrl_weight": 1.0, "srrl_feature_weight": 1.0, "srrl_connector": "mlp2"},
    "align_uniform": {"kd_weight": 1.0, "align_weight": 1.0, "unif_weight": 1.0},
    "aft": {"aft_weight": 1.0},
    "feature_kd": {"feature_kd_weight": 1.0},
    "rkd": {"rkd_weight": 1.0},
    "ft": {"ft_weight": 1.0},
    "btuning": {"btuning_weight": 1.0},
    "function_matching": {"ce_weight": 0.0, "kd_weight": 1.0, "kd_temperature": 1.0},
}


def with_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """`config` with the loss of `method` (a METHODS key): CE weight 1 unless the preset says
  otherwise, the preset's terms and settings, every other term's weight 0 and warm-up 0."""
  if method not in METHODS:
    raise errors.UserError(f"unknown method {method!r}; valid: {sorted(METHODS)}")
  loss = config.loss
  loss.ce_weight = 1.0
  loss.kd_standardize = False
  for term in _ALL_WEIGHTS:
    loss[f"{term}_weight"] = 0.0
  for term in WARMUP_TERMS:
    loss.warmup_epochs[term] = 0.0
  for key, value in METHODS[method].items():
    if key.startswith("warmup_epochs."):
      loss.warmup_epochs[key.split(".", 1)[1]] = value
    else:
      loss[key] = value
  return config


def _teacher() -> ml_collections.ConfigDict:
  """The teachers, how they run, and their adaptation (`teacher.*`)."""
  # Teachers (needed by every loss term but CE): Hub ids, local HF directories or kdjax run
  # directories (an adapted teacher from configs/adapt.py, or any kdjax run), comma-separated
  # for several. Frozen: eval mode, no gradient, passed to the step, never checkpointed.
  c = ml_collections.ConfigDict()
  c.models = ""
  # online: run the teachers in every step on the student's augmented batch (resized to each
  # teacher's resolution and normalisation on the device) | cached: run them once over the
  # training set (cache_views augmented views per image) and read their outputs from disk.
  c.mode = "online"
  # Each teacher's input view, comma-separated in teacher.models' order: "" = its checkpoint's
  # preprocessing (central crop, size), "SIZE" or "SIZE/CROP" (central CROP fraction at SIZE px,
  # e.g. "518/1.0": the AFT reference's DINOv2). Made on the device from the student's view.
  c.views = ""
  c.dtype = "float32"  # teacher compute dtype: float32 | bfloat16
  c.param_sharding = "replicate"  # replicate | fsdp (split over the data axis)
  c.fsdp_min_size = 2**16
  c.cache_dir = ""  # cached: empty = WORKDIR/teacher_cache; set it to share a cache
  c.cache_views = 1  # cached: augmented views per training image (K >= 1)
  # cached: training positions per cache shard, the unit a killed cache build resumes from
  c.cache_shard_size = 1024
  c.evaluate = True  # evals also report teacher accuracy and student-teacher agreement
  # Adapt the teacher to the task first (paper A). Empty (the default): teacher.models are used
  # as they are. Otherwise the whole trainer config of the adaptation run (adapt_config below:
  # model.pretrained is the Hub teacher, model.freeze_backbone=True a linear probe), which
  # `python -m kdjax.main` (kdjax/train/adapt.py) runs into WORKDIR/teacher first (resumed if
  # killed, skipped once finished) and then distils from; teacher.models stays empty. Its data
  # are the student's dataset, classes, training split and hold-out (checked), seen through its
  # own views; its data.data_dir empty: the student's. Tune it as --config.teacher.adapt.KEY.
  c.adapt = ml_collections.ConfigDict()
  return c


def _data() -> ml_collections.ConfigDict:
  """The dataset, its subsets and views, the augmentation (`data.*`)."""
  c = ml_collections.ConfigDict()
  c.name = "cifar10"  # any TFDS image-classification dataset, or kdjax_digits
  c.data_dir = ""  # empty: TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.download = False  # True: download_and_prepare as array_record (needs network + TF)
  c.train_split = "train"
  c.test_split = "test"  # empty: no test evaluation
  c.val_fraction = 0.0  # class-stratified hold-out from the train split
  c.n_per_class = config_dict.placeholder(int)  # data-limited: n training images per class
  c.fraction = config_dict.placeholder(float)  # data-limited: this fraction of each class
  c.subset_seed = 0  # seed of the hold-out and subset selection
  c.in_memory = True  # whole split on device (CIFAR-size); False: stream from disk
  c.num_workers = 8  # streaming: decoding threads
  c.prefetch = 4  # streaming: batches decoded ahead
  c.load_size = config_dict.placeholder(int)  # resize on load (needed for mixed sizes)
  # square: warp to load_size x load_size | shorter: the short side to load_size (aspect kept),
  # then the central square (torchvision Resize + CenterCrop: no distortion) | shorter_full:
  # the whole aspect-kept image (the random-resized crop draws from all of it; the eval view is
  # still the central crop), stored on a load_size x round(load_size x max_aspect) canvas
  # (portrait images transposed; longer images centre-cropped to max_aspect)
  c.load_resize = "square"
  c.load_filter = "bilinear"  # shorter, shorter_full: bilinear (torchvision) | bicubic (timm)
  c.max_aspect = 2.0
  # label names left out of every split, the other labels renumbered (Caltech-101's
  # background_google: the reference's 101 classes)
  c.exclude_classes = ()
  c.image_size = 32  # model input size
  c.eval_crop_fraction = 1.0  # eval: central crop of this fraction, then resize
  c.mean = CIFAR_MEAN
  c.std = CIFAR_STD
  # auto: a pre-trained model (model.pretrained) gets its own checkpoint's mean/std (from its
  # preprocessor_config.json), written back into the run's config.json | config: data.mean/std
  c.normalization = "auto"
  # Synthetic images (kdjax.generate output directories, comma-separated) concatenated with the
  # real training rows, as paper A does; validation and test stay real.
  c.synthetic = ""
  # Use a part of each synthetic set, per class, in generation order (e.g. a 2x set as 1x):
  c.synthetic_per_class = config_dict.placeholder(int)  # at most n per class, or
  c.synthetic_fraction = config_dict.placeholder(float)  # this fraction of each class
  # True: synthetic images are labelled by their prompt's class | False: unlabelled (no CE;
  # they only feed the distillation terms)
  c.synthetic_labels = True
  # True: the train-split images that the data-limited selection (n_per_class / fraction) leaves
  # out, validation hold-out excluded, join the training rows unlabelled (label -1: no CE; they
  # only feed the distillation terms), as paper A's extra images but real ones
  c.unlabelled_rest = False
  c.augment = ml_collections.ConfigDict()
  c.augment.kind = "crop_flip"  # crop_flip | rrc_flip | none
  c.augment.pad = 4
  c.augment.flip = True
  c.augment.scale = (0.08, 1.0)
  c.augment.ratio = (3 / 4, 4 / 3)
  # Mixup (function matching, Beyer et al., arXiv 2106.05237: big_vision's mixup p=1): one
  # ratio a ~ Beta(alpha, alpha) per global batch, max(a, 1 - a) on the example's own image, the
  # partner the batch rolled by one; 0 = off. Each example is mixed with probability mixup_prob.
  # Teacher and student see the same mixed image (kdjax/data/augment.py mixup).
  c.augment.mixup_alpha = 0.0
  c.augment.mixup_prob = 1.0
  return c

def adapt_config(source: str, mode: str = "probe", data: str = "",
                 name: str = "hub") -> ml_collections.ConfigDict:
  """The trainer config that adapts the pre-trained `source` (a Hub id or directory) to a task:
  a new head on the frozen backbone (`mode="probe"`: backbone in eval mode, no gradient, never
  checkpointed) or a full fine-tune (`"finetune"`: backbone lr x 0.1). AdamW lr 1e-3, weight
  decay 1e-2, no schedule, batch 64, 10 (probe) / 30 (fine-tune) epochs. `data`: the TFDS
  dataset, seen at 224 px (CIFAR: resized to 256, random 224 crop + flip, eval the central 224;
  others: random-resized crop 224 + flip) with the checkpoint's own normalisation; empty: the
  data section stays base()'s, for the caller to set. configs/adapt.py's recipe and a
  distillation config's `teacher.adapt`; `name`: model.name (the family, or "hub": any)."""
  if mode not in ADAPT_MODES:
    raise errors.UserError(f"unknown adaptation mode {mode!r}; valid: {sorted(ADAPT_MODES)}")
  c = base()
  c.model.name = name
  c.model.pretrained = source
  c.model.freeze_backbone = mode == "probe"
  if data:
    c.data.name = data
    c.data.image_size = 224
    c.data.load_size = 256
    if data.startswith("cifar"):
      c.data.augment.kind = "crop_flip"
      c.data.augment.pad = 0  # random 224 crop of the 256 px image
      c.data.eval_crop_fraction = 224 / 256  # eval: the central 224 of the 256 px image
    else:
      c.data.augment.kind = "rrc_flip"
  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_epochs = 10.0 if mode == "probe" else 30.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.optimizer.backbone_lr_scale = 0.1 if mode == "finetune" else 1.0
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  return c


def get(config, key: str):
  """The value at dotted `key` (e.g. "optimizer.name"); KeyError/AttributeError if absent."""
  for part in key.split("."):
    config = config[part]
  return config


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}: a config (as a plain dict) keyed by dotted keys."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def generate_base() -> ml_collections.ConfigDict:
  """Config of `python -m kdjax.generate` (configs/synth/*.py): the real dataset (its class
  names, and with synth.multiple its per-class training counts, selected exactly as the trainer
  selects them) and the Stable Diffusion sampling."""
  c = ml_collections.ConfigDict()
  c.data = base().data
  c.synth = ml_collections.ConfigDict()
  c.synth.pipeline = "CompVis/stable-diffusion-v1-4"  # Hub id or local diffusers-layout dir
  c.synth.revision = "bf16"  # the Hub branch with bf16 Flax weights ("flax": float32)
  c.synth.dtype = "bfloat16"  # compute and weight dtype: bfloat16 | float32
  c.synth.scheduler = "dpm_multistep"  # dpm_multistep (DPM-Solver++ 2M) | ddim | pndm
  c.synth.num_inference_steps = 25
  c.synth.guidance_scale = 7.5  # classifier-free guidance; <= 1 disables it (one UNet pass)
  c.synth.negative_prompt = ""  # the unconditional prompt of guidance
  c.synth.resolution = 512  # generated size (Stable Diffusion v1: 512)
  c.synth.image_size = 0  # stored size; 0: the real dataset's (if fixed and square) else resolution
  c.synth.resize_method = "lanczos3"  # jax.image.resize method, antialiased
  c.synth.encoding = "png"  # png (lossless) | jpeg
  c.synth.jpeg_quality = 95
  c.synth.templates = ("a picture of a {c}",)  # class i's n-th image uses template n mod len
  c.synth.rename = ()  # ("class_name=prompt words", ...): better words for awkward label names
  c.synth.exclude_classes = ()  # label names that get no synthetic image
  c.synth.images_per_class = 0  # set this ...
  c.synth.multiple = 0.0  # ... or this: x the real training count of each class (paper: 1, 2)
  c.synth.seed = 0
  c.synth.batch_per_device = 8
  c.synth.shard_size = 256  # images per shard: the unit of resumption
  return c


def generator_base() -> ml_collections.ConfigDict:
  """Config of the generator's training (kdjax.generate.train, experiments/
  train_tiny_diffusion.py): the corpus (data.name, data.train_split; its class names make the
  captions) and a small latent diffusion pipeline of Stable Diffusion's architecture."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = base().data
  c.gen = ml_collections.ConfigDict()
  c.gen.arch = "tiny"  # kdjax.generate.random_pipeline.ARCHITECTURES: text encoder, VAE, UNet
  c.gen.unet_channels = ()  # UNet block_out_channels; (): the arch's
  c.gen.vae_channels = ()  # VAE block_out_channels; (): the arch's
  c.gen.resolution = 16  # the generator's image size (the corpus is resized to it)
  c.gen.templates = ("a picture of a {c}",)  # captions: a class's images use each in turn
  c.gen.rename = ()  # ("class_name=prompt words", ...), as synth.rename
  c.gen.batch_size = 128  # global, both stages
  c.gen.warmup_steps = 100
  c.gen.vae_steps = 1000
  c.gen.vae_learning_rate = 1e-3
  c.gen.kl_weight = 1e-3  # x the per-element KL of the VAE posterior to N(0, I)
  c.gen.unet_steps = 4000
  c.gen.unet_learning_rate = 1e-3
  # the UNet's target: epsilon (SD v1) | v_prediction (SD 2: weighs the noisiest steps, where
  # a sample's class is decided, more)
  c.gen.prediction_type = "v_prediction"
  c.gen.cond_dropout = 0.1  # captions replaced by the empty prompt: classifier-free guidance
  # True: the (randomly initialised) CLIP text encoder trains with the UNet, at its learning
  # rate | False: frozen, as in Stable Diffusion (whose encoder CLIP pre-trained)
  c.gen.train_text_encoder = True
  c.gen.log_every_steps = 100
  c.gen.checkpoint_every_steps = 500
  return c
