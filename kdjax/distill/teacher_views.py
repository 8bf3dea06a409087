"""How each teacher sees the student's augmented image: the student's normalised batch is mapped
back to pixels and, on the device, given each teacher's own input view: the central crop and
size of its checkpoint's preprocessing (e.g. HF DINOv2: the central 224/256, at 224 px) or of
`teacher.views` (e.g. "518/1.0": the whole image at 518 px, the AFT reference's DINOv2), with its
resampling filter and normalisation."""

import dataclasses

import jax
import jax.numpy as jnp

from kdjax import errors, image_ops


@dataclasses.dataclass(frozen=True)
class TeacherView:
  """How one teacher sees the shared augmented image, and what it outputs."""

  name: str
  apply: object  # (variables, pixels) -> output dict (kdjax.teachers.Teacher.apply)
  image_size: tuple
  rescale: float
  mean: tuple
  std: tuple
  num_features: int
  num_logits: int | None  # width of its `logits` output (None: no head)
  crop_fraction: float = 1.0  # central fraction of the shared view kept before the resize
  resample: str = "linear"  # jax.image.resize method of that resize


# teacher.views normalisations (timm's data constants)
VIEW_NORMS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
              "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
              "openai_clip": ((0.48145466, 0.4578275, 0.40821073),
                              (0.26862954, 0.26130258, 0.27577711))}


def parse_views(text: str, num_teachers: int) -> list:
  """`teacher.views` -> one (size, crop_fraction, norm or None) or None (the checkpoint's own)
  per teacher. Entries, comma-separated in teacher.models' order: "" (the checkpoint's
  preprocessing), "SIZE" (SIZE x SIZE px, the whole view), "SIZE/CROP" (the central CROP
  fraction, timm's crop_pct, resized to SIZE) or "SIZE/CROP/NORM" (NORM: a VIEW_NORMS key
  instead of the checkpoint's mean and std)."""
  if not text.strip():
    return [None] * num_teachers
  items = [x.strip() for x in text.split(",")]
  if len(items) != num_teachers:
    raise errors.UserError(f"teacher.views={text!r} has {len(items)} entries for {num_teachers} "
                           "teachers: give one per teacher.models entry (empty: the "
                           "checkpoint's own), e.g. '518/1.0,'")
  out = []
  for item in items:
    if not item:
      out.append(None)
      continue
    size, _, rest = item.partition("/")
    crop, _, norm = rest.partition("/")
    try:
      size, crop = int(size), float(crop or 1.0)
    except ValueError:
      size, crop = 0, 0.0
    if size <= 0 or not 0 < crop <= 1 or (norm and norm not in VIEW_NORMS):
      raise errors.UserError(f"teacher.views entry {item!r}: want SIZE, SIZE/CROP or "
                             "SIZE/CROP/NORM with SIZE > 0 pixels, 0 < CROP <= 1 and NORM one "
                             f"of {sorted(VIEW_NORMS)}, e.g. 518/1.0")
    out.append((size, crop, norm or None))
  return out


def view_of(teacher, override=None) -> TeacherView:
  """A `kdjax.teachers.Teacher`'s view; its output widths from an abstract forward pass.

  The checkpoint's preprocessing resizes a raw image's short side to S and crops the central
  C x C (HF: shortest_edge S, crop_size C): on the shared square view that is the central C/S,
  resized to C. A square resize keeps the whole view. A kdjax run as teacher (an adapted
  teacher) saw the student's own augmented views: it keeps the whole view too. `override`:
  (size, crop_fraction) from `parse_views`."""
  pre = teacher.preprocess
  crop_fraction = 1.0
  if pre.resize is not None and pre.crop is not None:  # e.g. shortest_edge 256 or 256 x 256,
    resized = pre.resize[1] if pre.resize[0] == "shortest_edge" else min(pre.resize[1])
    crop_fraction = min(1.0, min(pre.crop) / resized)  # then the central 224
  h, w = teacher.image_size
  mean, std = tuple(pre.mean), tuple(pre.std)
  if override is not None:
    (h, w), crop_fraction = (override[0], override[0]), override[1]
    if override[2]:
      mean, std = VIEW_NORMS[override[2]]
  out = jax.eval_shape(lambda v, x: teacher.apply(v, x), teacher.variables,
                       jax.ShapeDtypeStruct((2, h, w, 3), jnp.float32))
  if "features" not in out:
    raise errors.UserError(f"teacher {teacher.name!r} has no 'features' output: it cannot be "
                           "distilled from; pass an image classification checkpoint")
  logits = out.get("logits")
  return TeacherView(
      name=teacher.name, apply=teacher.apply, image_size=(h, w),
      rescale=float(pre.rescale), mean=mean, std=std, num_features=int(out["features"].shape[-1]),
      num_logits=None if logits is None else int(logits.shape[-1]),
      crop_fraction=float(crop_fraction), resample=pre.resample)


def to_teacher_pixels(images, data_mean, data_std, view: TeacherView):
  """The student's normalised batch [B,H,W,3] -> the teacher's normalised input: the view's
  central `crop_fraction`, resized to its size with its filter, normalised its way."""
  x = (images.astype(jnp.float32) * jnp.asarray(data_std, jnp.float32)
       + jnp.asarray(data_mean, jnp.float32)) * 255.0
  x = image_ops.central_crop(x, view.crop_fraction)
  h, w = view.image_size
  if x.shape[1:3] != (h, w):
    x = jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), view.resample, antialias=True)
  return (x * view.rescale - jnp.asarray(view.mean, jnp.float32)) / jnp.asarray(
      view.std, jnp.float32)
