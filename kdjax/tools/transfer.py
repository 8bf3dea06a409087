r"""The transfer miniature: real pre-training on one dataset, real transfer to another, offline.

Both papers are about pre-trained models: paper A (Farhat & Chen, arXiv 2404.03263) distils a
public pre-trained teacher, adapted to the task by a linear probe, into a student from scratch
and compares it with the same student pre-trained and fine-tuned; paper B (Qiu et al., arXiv
2406.07337) adds AFT to a pre-trained downstream model and compares it with fine-tuning (STL)
and KD, with weaker and stronger teachers and with several at once. This module runs that
pipeline with two real datasets that ship inside pip packages, as a user with Hub weights
would run it, every step a plain kdjax run:

1. Pre-training corpus P = `kdjax_mnist5k` (4,000 MNIST digits, kdjax/data/embedded.py). Three
   Hugging Face architectures (ARCHITECTURES: a ResNet teacher, a ViT teacher, the student's
   ResNet) are trained on P from random init (`model.name=hub`, `model.hub_config`) and
   published with kdjax.export as Hugging Face checkpoint directories (`published/NAME`).
2. Target task T = `kdjax_digits` (the UCI digits in scikit-learn): its first 437 train images
   are the training pool (a 10% validation hold-out, then `n_per_class` labelled images per
   digit, re-drawn by every seed), the other 1,360 images the test split.
3. Each teacher is adapted to T by a linear probe on the labelled images (configs/adapt.py's
   recipe: frozen backbone, new head).
4. The student arms (ARMS) on T, every one the same steps and batch.

Recipe. From the papers: AdamW at 1e-3 with weight decay 1e-2 (paper A's runs, sfarhat/dapt),
the fine-tune's backbone at 1e-4 and head at 1e-3 (paper A), KD at T=4 and every paper A weight
1, the projection heads' 128-d embeddings, AFT's beta 1 and its prior (rho) at 1e-2, its KD
baseline's map at the model's learning rate (amazon-science/adaptive-feature-transfer, prior.py
and its KD override), cached teacher features for AFT. Different on purpose: 300 steps of 32
on T instead of 250 epochs (T has 50-200 labelled images: 300 steps are 48-190 epochs), a
cosine schedule for every run, 32 px inputs (8x8 digits; HF's ResNet stem divides by 4), 16
augmented views per image in the teacher cache (the reference caches one unaugmented view; few
views over-fit a small set: BENCHMARKS.md, the teacher-cache views), and the probe at 1e-2 for
200 steps.

`config_for("stage=...,n_per_class=...,seed=...,root=...")` is every run's kdjax config
(configs/transfer.py exposes it to `python -m kdjax.main`); `run_all` runs the stages in order,
skipping finished runs; `aggregate` and `paired` give means, 95% intervals and paired
differences. experiments/transfer.py is the full grid; `python -m kdjax.tools.demo` a small part.
"""

import json
import time
from pathlib import Path

import ml_collections

from kdjax import configlib, errors, export, files
from kdjax.data import sources
from kdjax.generate import quality
from kdjax.generate import run as generate_run
from kdjax.generate import train as generator_train
from kdjax.train import trainer

P_DATA = "kdjax_mnist5k"
T_DATA = "kdjax_digits"
T_TRAIN_SPLIT = "train[:437]"  # the training pool of T
T_TEST_SPLIT = "train[437:]+test"  # 1,360 images: one image is 0.07 points
IMAGE_SIZE = 32  # both sets are 8x8 images (17 grey levels), upsampled to 32 px

# Hugging Face configs (config.json) of the networks trained on P. The HF ResNet's stem divides
# the input by 4, so 32 px inputs keep the 8x8 digits' detail after the stem.
ARCHITECTURES = {
    # the strong teacher: ResNet-18's layout at half width
    "resnet": {"model_type": "resnet", "num_channels": 3, "embedding_size": 32,
               "hidden_sizes": [32, 64, 128, 256], "depths": [2, 2, 2, 2],
               "layer_type": "basic", "hidden_act": "relu"},
    # the weak teacher: a small ViT (4x4 patches at 32 px: 64 tokens)
    "vit": {"model_type": "vit", "num_channels": 3, "image_size": IMAGE_SIZE, "patch_size": 4,
            "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "intermediate_size": 128, "hidden_act": "gelu", "qkv_bias": True,
            "layer_norm_eps": 1e-12},
    # the student: ResNet-18's layout at quarter width
    "student": {"model_type": "resnet", "num_channels": 3, "embedding_size": 16,
                "hidden_sizes": [16, 32, 64, 128], "depths": [2, 2, 2, 2],
                "layer_type": "basic", "hidden_act": "relu"},
}
TEACHERS = ("resnet", "vit")  # stronger, weaker (measured: P test accuracy, probe accuracy)
PRETRAIN_STEPS = 1200  # on P, batch 64: 19 epochs of its 4,000 images
PROBE_STEPS = 200
ARM_STEPS = 300  # every student arm on T, batch 32
CACHE_VIEWS = 16  # cached teachers (AFT, feature-KD): augmented views per training image

# arm -> (what it is, the teachers it reads: "probe_X" = teacher X probed on T, "tune_X" = X
# fine-tuned on T, "X" = X as published, pre-trained features only)
ARMS = {
    "scratch": ("student from scratch, CE", ()),
    "finetune": ("student pre-trained on P, fine-tuned (paper A's baseline = paper B's STL)", ()),
    "distill": ("paper A: scratch student, CE + KD + align + unif from the probed ResNet", (
        "probe_resnet",)),
    "distill_unlabelled": ("paper A + T's unlabelled remainder as extra inputs", (
        "probe_resnet",)),
    "distill_tuned": ("paper A, the ResNet fine-tuned on T instead of probed (its other "
                      "adaptation)", ("tune_resnet",)),
    "kd": ("scratch student, CE + KD from the probed ResNet", ("probe_resnet",)),
    "aft": ("paper B: pre-trained student, CE + AFT, ResNet features", ("resnet",)),
    "aft_weak": ("paper B: pre-trained student, CE + AFT, ViT features (weaker teacher)", (
        "vit",)),
    "aft_both": ("paper B: pre-trained student, CE + AFT, ResNet + ViT features concatenated",
                 ("resnet", "vit")),
    "feature_kd": ("paper B's feature-KD baseline on the pre-trained student, ResNet features",
                   ("resnet",)),
    # the student pre-trained on a quarter of P: its teachers then learned from 4x its data, as
    # paper B's pre-trained models learned from far more than its downstream models
    "finetune_p25": ("student pre-trained on 1,000 of P's images, fine-tuned (STL)", ()),
    "aft_p25": ("that student + AFT, ResNet features (the teacher saw 4x its P images)",
                ("resnet",)),
}
# paper A's synthetic arms: images drawn by the generator trained on P (GENERATOR), prompted
# with T's class names; "1x" / "2x": as many per class as T's labelled images / twice as many
# (the 2x set's first half per class is the 1x set), labelled by their prompt, or unlabelled
# (distillation terms only)
SYNTHETIC_ARMS = {
    "scratch_syn1x": ("student from scratch, CE, + 1x synthetic images labelled by prompt", (),
                      1, True),
    "scratch_syn2x": ("student from scratch, CE, + 2x synthetic images labelled by prompt", (),
                      2, True),
    "distill_syn1x": ("paper A + 1x synthetic images labelled by prompt", ("probe_resnet",), 1,
                      True),
    "distill_syn2x": ("paper A + 2x synthetic images labelled by prompt", ("probe_resnet",), 2,
                      True),
    "distill_synu": ("paper A + the 2x synthetic images unlabelled (distillation terms only)",
                     ("probe_resnet",), 2, False),
    # investigation: do more synthetic images help more? (paper A's proportions stop at 2x)
    "scratch_syn10x": ("student from scratch, CE, + 10x synthetic images labelled by prompt",
                       (), 10, True),
    "distill_syn10x": ("paper A + 10x synthetic images labelled by prompt", ("probe_resnet",),
                       10, True),
}
ARMS.update({arm: v[:2] for arm, v in SYNTHETIC_ARMS.items()})
SYNTH_MULTIPLE = 2  # the synthetic set generated per (n, seed): 2x T's labelled images


def synthetic_set(arm: str) -> int:
  """The multiple of the set an arm reads (its images are the set's first per class: the
  plan's seeds and prompts do not depend on the set's size, so the 2x set's images open the
  10x set too, up to float rounding of other batch mates)."""
  return max(SYNTH_MULTIPLE, SYNTHETIC_ARMS[arm][2])
# Captions of P's classes in the generator's training and prompts of T's classes in the
# generation: the same words (both sets' classes are the digits "0" .. "9").
SYNTH_TEMPLATES = ("a handwritten digit {c}", "the number {c}")
GENERATOR = {  # the generator trained on P (kdjax.generate.train; configs/synth/tiny_diffusion.py)
    "resolution": 16, "vae_steps": 300, "unet_steps": 1500, "batch_size": 128,
}
SYNTH_SAMPLING = {"scheduler": "dpm_multistep", "num_inference_steps": 25,
                  "guidance_scale": 3.0}
P25_SPLIT = "train[:25%]"  # the `_p25` student's share of P
STAGES = ("pretrain_resnet", "pretrain_vit", "pretrain_student", "pretrain_student_p25",
          "probe_resnet", "probe_vit", "tune_resnet", *ARMS)


# ------------------------------------------------------------------------------------ configs


def paths(root) -> dict[str, Path]:
  root = Path(root).resolve()
  return {"root": root, "hf": root / "hf", "pretrain": root / "pretrain",
          "published": root / "published", "generator": root / "generator"}


def run_dir(root, stage: str, n_per_class: int = 0, seed: int = 0) -> Path:
  """Where a stage's run lives: pretrain/NAME, or nN/sSEED/STAGE on T."""
  if stage.startswith("pretrain_"):
    return paths(root)["pretrain"] / stage.removeprefix("pretrain_")
  return paths(root)["root"] / f"n{n_per_class}" / f"s{seed}" / stage


def synthetic_dir(root, n_per_class: int, seed: int, multiple: int = SYNTH_MULTIPLE) -> Path:
  """The synthetic set of (n, seed): `multiple` x T's labelled images per class."""
  name = "synthetic" if multiple == SYNTH_MULTIPLE else f"synthetic_x{multiple}"
  return paths(root)["root"] / f"n{n_per_class}" / f"s{seed}" / name


def _t_data(c, n_per_class: int, seed: int) -> None:
  c.data.name = T_DATA
  c.data.train_split, c.data.test_split = T_TRAIN_SPLIT, T_TEST_SPLIT
  c.data.val_fraction = 0.1
  c.data.n_per_class = n_per_class
  c.data.subset_seed = seed  # every seed re-draws the hold-out and the labelled images


def _base(seed: int) -> ml_collections.ConfigDict:
  """What every stage shares: 32 px digits, their augmentation, paper A's AdamW, a Hub model."""
  c = configlib.base()
  c.seed = seed
  c.data.load_size = c.data.image_size = IMAGE_SIZE
  c.data.augment.kind = "crop_flip"
  c.data.augment.pad = 4  # one pixel of the 8x8 originals
  c.data.augment.flip = False  # digits are not mirror-symmetric
  c.data.mean = c.data.std = (0.5, 0.5, 0.5)
  c.data.normalization = "config"  # the same inputs for every network
  c.optimizer.name = "adamw"  # paper A: AdamW, lr 1e-3, weight decay 1e-2
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "cosine"
  c.eval_batch_size = 500
  c.model.name = "hub"
  return c


def _pretrain(c, arg, p: dict) -> None:
  """pretrain_NAME: network NAME from random init on P (`_p25`: on a quarter of P)."""
  name = arg.stage.removeprefix("pretrain_")
  c.data.name = P_DATA
  if name.endswith("_p25"):
    c.data.train_split = P25_SPLIT
  c.model.hub_config = str(p["hf"] / name.removesuffix("_p25"))
  c.batch_size = 64
  c.total_steps = arg.steps or PRETRAIN_STEPS
  c.optimizer.warmup_steps = c.total_steps // 20


def _probe(c, arg, p: dict) -> None:
  """probe_X: paper A's step 1, a linear probe of published teacher X on T."""
  _t_data(c, arg.n_per_class, arg.seed)
  c.model.pretrained = str(p["published"] / arg.stage.removeprefix("probe_"))
  c.model.freeze_backbone = True
  c.batch_size = 32
  c.total_steps = arg.steps or PROBE_STEPS
  c.optimizer.learning_rate = 1e-2
  c.optimizer.weight_decay = 0.0


def _tune(c, arg, p: dict) -> None:
  """tune_X: paper A's other adaptation, published teacher X fine-tuned on T."""
  _t_data(c, arg.n_per_class, arg.seed)
  c.model.pretrained = str(p["published"] / arg.stage.removeprefix("tune_"))
  c.batch_size = 32
  c.total_steps = arg.steps or ARM_STEPS
  c.optimizer.backbone_lr_scale = 0.1


def _arm(c, arg, p: dict) -> None:
  """A student arm (ARMS) on T: its initialisation, its teachers and its loss."""
  stage = arg.stage
  _t_data(c, arg.n_per_class, arg.seed)
  c.batch_size = 32
  c.total_steps = arg.steps or ARM_STEPS
  if pretrained_student(stage):
    c.model.pretrained = str(p["published"] / pretrained_student(stage))
    c.optimizer.backbone_lr_scale = 0.1  # paper A's fine-tune: backbone 1e-4, head 1e-3
  else:
    c.model.hub_config = str(p["hf"] / "student")
  teachers = []
  for source in ARMS[stage][1]:
    if source.startswith(("probe_", "tune_")):
      teachers.append(str(run_dir(arg.root, source, arg.n_per_class, arg.seed)))
    else:
      teachers.append(str(p["published"] / source))
  c.teacher.models = ",".join(teachers)
  if stage in SYNTHETIC_ARMS:
    _, _, multiple, labelled = SYNTHETIC_ARMS[stage]
    c.data.synthetic = str(synthetic_dir(arg.root, arg.n_per_class, arg.seed,
                                         synthetic_set(stage)))
    c.data.synthetic_per_class = arg.n_per_class * multiple
    c.data.synthetic_labels = labelled
  _arm_loss(c, stage, arg.beta)


def _arm_loss(c, stage: str, beta: float) -> None:
  """The arm's distillation terms (none: CE only); cached teachers for AFT and feature-KD."""
  if stage in ("distill", "distill_unlabelled", "distill_tuned") or stage.startswith(
      "distill_syn"):
    c.loss.kd_weight = c.loss.align_weight = c.loss.unif_weight = 1.0
    c.data.unlabelled_rest = stage == "distill_unlabelled"
  elif stage == "kd":
    c.loss.kd_weight = 1.0
  elif stage.startswith("aft"):
    c.loss.aft_weight = beta or 1.0  # paper B's beta; its reference tunes it per task
  elif stage == "feature_kd":
    c.loss.feature_kd_weight = 1.0
    # AFT's reference trains its KD baseline's map at the model's learning rate, not the
    # prior's (amazon-science/adaptive-feature-transfer)
    c.loss.prior_learning_rate = c.optimizer.learning_rate
  if stage.startswith(("aft", "feature_kd")):  # paper B: teacher features computed once
    c.teacher.mode = "cached"
    c.teacher.cache_views = CACHE_VIEWS


def config_for(arg: str | None = None) -> ml_collections.ConfigDict:
  """The kdjax config of one stage: `stage=` one of STAGES, `n_per_class=` (T's labelled images
  per class), `seed=`, `root=` (where every run of the setting lives), `steps=` (0: the
  stage's default), `beta=` (AFT arms' weight; 0: 1, paper B's default), `runlocal`."""
  arg = configlib.parse_arg(arg, stage="scratch", n_per_class=5, seed=0, root="runs/transfer",
                            steps=0, beta=0.0, runlocal=False)
  if arg.stage not in STAGES:
    raise ValueError(f"unknown transfer stage {arg.stage!r}; valid: {list(STAGES)}")
  c = _base(arg.seed)
  stage_kinds = (("pretrain_", _pretrain), ("probe_", _probe), ("tune_", _tune))
  setup = next((f for prefix, f in stage_kinds if arg.stage.startswith(prefix)), _arm)
  setup(c, arg, paths(arg.root))
  c.checkpoint_every_steps = c.total_steps
  c.log_every_steps = max(1, c.total_steps // 4)
  if arg.runlocal:
    configlib.shrink_for_local_run(c)
  return c


def generator_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The generator's training config (kdjax.generate.train): P's training split, its class
  names captioned with SYNTH_TEMPLATES, GENERATOR's sizes; `runlocal`: a few steps."""
  arg = configlib.parse_arg(arg, runlocal=False, seed=0)
  c = configlib.generator_base()
  c.seed = arg.seed
  c.data.name = P_DATA
  c.data.in_memory = True
  c.gen.templates = SYNTH_TEMPLATES
  for k, v in GENERATOR.items():
    c.gen[k] = v
  if arg.runlocal:
    c.gen.vae_steps = c.gen.unet_steps = 4
    c.gen.batch_size = 16
    c.gen.warmup_steps = 2
    c.gen.log_every_steps = c.gen.checkpoint_every_steps = 2
  return c


def synth_config(root, n_per_class: int, seed: int, runlocal: bool = False,
                 multiple: int = SYNTH_MULTIPLE):
  """`python -m kdjax.generate`'s config of (n, seed)'s synthetic set: T's class names with
  SYNTH_TEMPLATES, `multiple` x T's labelled images per class (its selection at `seed`),
  drawn by the generator trained on P, seeds of their own per (n, seed)."""
  c = configlib.generate_base()
  _t_data(c, n_per_class, seed)
  c.synth.pipeline = str(paths(root)["generator"] / generator_train.PIPELINE_DIR)
  c.synth.revision = ""
  c.synth.dtype = "float32"  # bfloat16 matmuls are slow on CPU
  c.synth.templates = SYNTH_TEMPLATES
  c.synth.resolution = GENERATOR["resolution"]
  for k, v in SYNTH_SAMPLING.items():
    c.synth[k] = v
  if runlocal:
    c.synth.num_inference_steps = 2
  c.synth.multiple = float(multiple)
  c.synth.seed = 1000 * n_per_class + seed
  c.synth.batch_per_device = 100
  c.synth.shard_size = 1000
  return c


def pretrained_student(arm: str) -> str | None:
  """The published student an arm starts from (`student`, `student_p25`), or None (scratch)."""
  if arm.startswith(("finetune", "aft", "feature_kd")):
    return "student_p25" if arm.endswith("_p25") else "student"
  return None


def write_architectures(root) -> None:
  """root/hf/NAME/config.json for every network of the setting (plain JSON: no torch)."""
  for name, config in ARCHITECTURES.items():
    directory = paths(root)["hf"] / name
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2) + "\n"
    if not (directory / "config.json").is_file() or (
        directory / "config.json").read_text() != text:
      (directory / "config.json").write_text(text)


# ------------------------------------------------------------------------------------ running


def _record_path(directory: Path) -> Path:
  return directory / "transfer.json"


def variant(stage: str, beta: float = 0.0) -> str:
  """The name of an AFT arm run at another beta (`aft_beta0.3`), else `stage`."""
  return f"{stage}_beta{beta:g}" if beta else stage


def run_stage(stage: str, root, n_per_class: int = 0, seed: int = 0, steps: int = 0,
              runlocal: bool = False, beta: float = 0.0) -> dict:
  """Trains one stage (or resumes it, or reads its record when finished): its record."""

  directory = run_dir(root, variant(stage, beta), n_per_class, seed)
  record_path = _record_path(directory)
  if record_path.is_file():
    return json.loads(record_path.read_text())
  arg = (f"stage={stage},n_per_class={n_per_class},seed={seed},root={root},steps={steps},"
         f"beta={beta}" + (",runlocal" if runlocal else ""))
  config = config_for(arg)
  t0 = time.perf_counter()
  m = trainer.train_and_evaluate(config, str(directory)).metrics
  record = {
      "stage": variant(stage, beta), "arm": stage, "n_per_class": n_per_class, "seed": seed,
      "aft_weight": config.loss.aft_weight,
      "test_accuracy": m.get("test/accuracy"), "test_count": m.get("test/count"),
      "val_accuracy": m.get("val/accuracy"), "val_count": m.get("val/count"),
      "teacher_test_accuracy": m.get("test/teacher_accuracy"),
      "agreement": m.get("test/agreement"),
      "steps": config.total_steps, "batch_size": config.batch_size,
      "train_flops": m["cost/train_flops"],
      "teacher_cache_flops": m.get("cost/teacher_cache_flops", 0.0),
      "wall_time_s": m["cost/wall_time_s"] + m.get("cost/teacher_cache_wall_time_s", 0.0),
      "call_wall_time_s": time.perf_counter() - t0,
  }
  record["total_flops"] = record["train_flops"] + record["teacher_cache_flops"]
  files.write_json(record_path, record)
  return record


def publish(name: str, root) -> Path:
  """Exports pretrain/NAME as a Hugging Face checkpoint directory published/NAME (once)."""

  out = paths(root)["published"] / name
  source = run_dir(root, f"pretrain_{name}")
  if (out / "kdjax_export.json").is_file():
    record = json.loads((out / "kdjax_export.json").read_text())
    if record["run"] == str(source):
      return out
  export.to_hf(source, out, overwrite=True)
  return out


def train_generator(root, runlocal: bool = False) -> dict:
  """The generator trained on P (once; a finished one is read back): its report."""
  return generator_train.train(generator_config("runlocal" if runlocal else None),
                               str(paths(root)["generator"]))


def make_synthetic(root, n_per_class: int, seed: int, runlocal: bool = False,
                   multiple: int = SYNTH_MULTIPLE) -> dict:
  """(n, seed)'s synthetic set (once) and how the probed teacher of (n, seed) reads it:
  {"generation": kdjax.generate's report, "fidelity": quality.fidelity of probe_resnet}."""
  directory = synthetic_dir(root, n_per_class, seed, multiple)
  record_path = directory / "transfer.json"
  if record_path.is_file():
    return json.loads(record_path.read_text())
  report = generate_run.generate(synth_config(root, n_per_class, seed, runlocal, multiple),
                                 str(directory))
  probe = run_dir(root, "probe_resnet", n_per_class, seed)
  record = {"n_per_class": n_per_class, "seed": seed, "multiple": multiple,
            "generation": report,
            "generation_flops": report.get("flops_per_image", 0.0) * report["num_images"],
            "fidelity": {"probe_resnet": quality.fidelity(probe, directory),
                         "pretrain_resnet": quality.fidelity(run_dir(root, "pretrain_resnet"),
                                                             directory)}}
  files.write_json(record_path, record)
  return record


def synthetic_grid(root, n_per_class: int, seed: int, path) -> Path:
  """PNG of (n, seed)'s synthetic set, ten per class (rows), beside ten real P images each."""
  p_data = configlib.base().data
  p_data.name = P_DATA
  real = sources.open_source(p_data, "test")
  images, labels = real.read(range(len(real)))
  return quality.grid(synthetic_dir(root, n_per_class, seed), path, real=(images, labels))


def needed(arms) -> tuple[list[str], list[str]]:
  """(networks to pre-train on P, teachers' adaptations to T) for `arms`."""
  sources = {s for arm in arms for s in ARMS[arm][1]}
  if any(arm in SYNTHETIC_ARMS for arm in arms):  # the probed ResNet measures the images
    sources.add("probe_resnet")
  nets = {s.removeprefix("probe_").removeprefix("tune_") for s in sources}
  nets |= {pretrained_student(arm) for arm in arms} - {None}
  order = [n for n in ("resnet", "vit", "student", "student_p25") if n in nets]
  # every published teacher is probed on T: its adapted accuracy measures its strength there
  return order, ([f"probe_{n}" for n in order if n in TEACHERS]
                 + sorted(s for s in sources if s.startswith("tune_")))


def run_all(root, arms, sizes, seeds, steps: dict | None = None, runlocal: bool = False,
            log=print) -> dict:
  """Every stage `arms` need, in order (finished runs are read back): {"pretrain": {name:
  record}, "probes": [records], "runs": [records]}."""
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    raise errors.UserError(f"unknown transfer arms {unknown}; valid: {list(ARMS)}")
  steps = steps or {}
  write_architectures(root)
  nets, probes = needed(arms)
  out = {"pretrain": {}, "probes": [], "runs": []}
  synthetic = sorted({synthetic_set(arm) for arm in arms if arm in SYNTHETIC_ARMS})

  def one(stage, n=0, seed=0):
    kind = "pretrain" if stage.startswith("pretrain_") else (
        "probe" if stage.startswith("probe_") else "arm")  # a teacher's fine-tune: an arm's steps
    done = _record_path(run_dir(root, stage, n, seed)).is_file()
    log(f"--- {stage}" + (f" n={n} seed={seed}" if kind != "pretrain" else "")
        + (": finished before" if done else ""))
    record = run_stage(stage, root, n, seed, steps.get(kind, 0), runlocal)
    log(f"--- {stage}: test accuracy {record['test_accuracy']:.4f}"
        + ("" if done else f" ({record['call_wall_time_s']:.0f}s)"))
    return record

  for name in nets:
    out["pretrain"][name] = one(f"pretrain_{name}")
    publish(name, root)
  if synthetic:
    log("--- generator: trained on P" + (": finished before" if (
        paths(root)["generator"] / generator_train.REPORT_FILE).is_file() else ""))
    out["generator"] = train_generator(root, runlocal)
    out["synthetic"] = []
  for n in sizes:
    for seed in seeds:
      out["probes"] += [one(probe, n, seed) for probe in probes]
      for multiple in synthetic:
        log(f"--- synthetic {multiple}x n={n} seed={seed}")
        out["synthetic"].append(make_synthetic(root, n, seed, runlocal, multiple))
        log(f"--- synthetic: the probed teacher reads "
            f"{out['synthetic'][-1]['fidelity']['probe_resnet']['accuracy']:.4f} of them as "
            "their prompt's class")
      out["runs"] += [one(arm, n, seed) for arm in arms]
  return out
