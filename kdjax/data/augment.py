"""On-device augmentation and normalisation of uint8 NHWC batches (runs inside `jax.jit`).

Each example draws its randomness from `jax.random.split(key, B)` over the *global* batch, so the
augmented batch is the same whatever the number of devices it is sharded over.

Kinds:
- "crop_flip": zero-pad by `pad` pixels, random `size` x `size` crop, horizontal flip (the CIFAR
  recipe, torchvision RandomCrop(padding) + RandomHorizontalFlip). Images larger than `size`
  (set `data.load_size`) are cropped as they are (paper A: resize 256, random crop 224);
  smaller ones are first resized up to `size`.
- "rrc_flip": random-resized-crop to `size`, then flip: torchvision RandomResizedCrop's
  get_params (area `scale`, log-uniform aspect `ratio`, integer box, 10 tries, then its
  central-crop fallback), the box resized with antialiasing.
- "rrc_flip_diffaug": rrc_flip, normalised, then DiffAugment as paper A's reference applies it
  to its synthetic-data runs (sfarhat/dapt utils/augment.py, mode "S" with the strategy
  flip_color_crop_rotate_scale_cutout, generated_distill.py:37,143-153): per batch one of the six
  operations, with per-example parameters, on the normalised image (teacher and student see the
  same augmented batch).
- "none": no augmentation: the deterministic eval view (`preprocess_eval`).
`flip=False` disables flipping (digits and text are not mirror-symmetric).
`mixup_alpha > 0` mixes the augmented global batch (`mixup`, big_vision's function-matching
mixup; the teacher sees the same mixed image).

Images stored whole (data.load_resize=shorter_full: [S, L, 4] canvases, see
kdjax.data.sources.resize_on_load) give rrc_flip's crop box drawn from the whole image and the
eval view's central crop of the whole image; a transposed (portrait) image is cropped in its
stored orientation and its crop transposed back, which draws the same boxes when the aspect
range is reciprocal (ratio = (r, 1/r), as the default (3/4, 4/3)); validation refuses others.
"""

import math

import jax
import jax.numpy as jnp

from kdjax import image_ops

KINDS = ("crop_flip", "rrc_flip", "rrc_flip_diffaug", "none")  # data.augment.kind


def _crop(image, key, size, pad):
  image = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  h, w = image.shape[:2]
  ky, kx = jax.random.split(key)
  y = jax.random.randint(ky, (), 0, h - size + 1)
  x = jax.random.randint(kx, (), 0, w - size + 1)
  return jax.lax.dynamic_slice(image, (y, x, 0), (size, size, image.shape[2]))


RRC_TRIES = 10  # torchvision RandomResizedCrop.get_params
FULL_UPRIGHT, FULL_TRANSPOSED = 255, 128  # a whole-image canvas' 4th channel (sources)


def rrc_box(key, h, w, scale, ratio):
  """torchvision RandomResizedCrop.get_params: (top, left, crop_h, crop_w) as int32 scalars.
  Up to 10 draws of (area fraction, log-uniform aspect); the first whose rounded box fits is
  taken; if none fits, the central crop with the aspect clamped to `ratio`. h, w: ints or int32
  scalars (an image's size on a canvas)."""
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  h, w = jnp.asarray(h, jnp.int32), jnp.asarray(w, jnp.int32)
  hf, wf = h.astype(jnp.float32), w.astype(jnp.float32)
  area = hf * wf * jax.random.uniform(k_area, (RRC_TRIES,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (RRC_TRIES,), minval=math.log(ratio[0]),
                                      maxval=math.log(ratio[1])))
  cw = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  ch = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = jnp.argmax(fits)
  in_ratio = wf / hf  # the fallback
  narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
  fw = jnp.where(wide, jnp.round(hf * max(ratio)).astype(jnp.int32), w)
  fh = jnp.where(narrow, jnp.round(wf / min(ratio)).astype(jnp.int32), h)
  found = fits[first]
  crop_h = jnp.where(found, ch[first], fh)
  crop_w = jnp.where(found, cw[first], fw)
  top = jnp.where(found, jax.random.randint(k_y, (), 0, h - crop_h + 1), (h - fh) // 2)
  left = jnp.where(found, jax.random.randint(k_x, (), 0, w - crop_w + 1), (w - fw) // 2)
  return top, left, crop_h, crop_w


def canvas_geometry(images):
  """(image width [B] int32, transposed [B] bool) of whole-image canvases [B, S, L, 4]."""
  mark = images[:, 0, :, 3]
  return jnp.sum(mark > 0, axis=1).astype(jnp.int32), mark[:, 0] == FULL_TRANSPOSED


def _random_resized_crop(image, key, size, scale, ratio, width=None, transposed=None):
  """The crop of `rrc_box`, resized to size x size (antialiased). On a canvas (`width`: the
  image's columns; the padding repeats its last column), the box is drawn inside the image and
  a transposed image's crop is transposed back."""
  h, w = image.shape[:2]
  w = w if width is None else width
  y0, x0, crop_h, crop_w = (v.astype(jnp.float32) for v in rrc_box(key, h, w, scale, ratio))
  sy, sx = size / crop_h, size / crop_w
  # scale_and_translate maps input coordinate u to output u * s + t.
  # Crop, then resize (torchvision's resized_crop): the antialiasing filter reads only the box.
  # A resize of the whole image would also read the pixels around it; resizing the image
  # masked to the box and dividing by the resized mask keeps each output pixel's filter
  # weights on the box, renormalised, as resizing the cropped image alone does (PIL, torch).
  rows, cols = jnp.arange(h, dtype=jnp.float32), jnp.arange(image.shape[1], dtype=jnp.float32)
  inside = (((rows >= y0) & (rows < y0 + crop_h))[:, None]
            & ((cols >= x0) & (cols < x0 + crop_w))[None, :]).astype(image.dtype)[..., None]
  both = jax.image.scale_and_translate(
      jnp.concatenate([image * inside, inside], -1), (size, size, image.shape[2] + 1), (0, 1),
      jnp.stack([sy, sx]), jnp.stack([-y0 * sy, -x0 * sx]), method="linear", antialias=True)
  out = both[..., :-1] / jnp.maximum(both[..., -1:], 1e-12)
  if transposed is not None:
    out = jnp.where(transposed, out.transpose(1, 0, 2), out)
  return out


def augment(images_uint8, key, cfg):
  """uint8 [B,H,W,C] -> float32 [B,size,size,C] normalised, augmented per `cfg.augment`."""
  return augment_keys(images_uint8, jax.random.split(key, images_uint8.shape[0]), cfg)


def mixup(images, labels, key, alpha: float, prob: float = 1.0):
  """Mixup of a global batch as big_vision applies it in function matching (Beyer et al., arXiv
  2106.05237; google-research/big_vision at 0127fb6, big_vision/utils.py:1146-1154 `get_mixup`,
  called on the global batch by trainers/proj/distill/distill.py:256-261 with the distill
  configs' `mixup=dict(p=1.0)`): one ratio a ~ Beta(alpha, alpha) per batch, a = max(a, 1 - a)
  (the example's own image weighs at least half), the partner being the batch rolled by one.

  Returns (images, label_mix, mix_weight). Beyond big_vision, an example is mixed only with
  probability `prob` (weight w = a, else w = 1): x = w x + (1 - w) x_partner. `label_mix` is the
  partner's label, int32 [B], possibly -1 (an unlabelled partner: the train step's CE,
  kdjax/steps.py train_cross_entropy, then counts the example's own label for the whole
  weight); `mix_weight` is w, float32 [B]. Computed on the global batch inside jit, so the
  batch is the same on any number of devices."""
  k_ratio, k_which = jax.random.split(key)
  lam = jax.random.beta(k_ratio, alpha, alpha, dtype=jnp.float32)
  lam = jnp.maximum(lam, 1.0 - lam)
  mixed = jax.random.bernoulli(k_which, prob, (images.shape[0],))
  weight = jnp.where(mixed, lam, 1.0).astype(jnp.float32)
  w = weight.reshape((-1,) + (1,) * (images.ndim - 1))
  images = w * images + (1.0 - w) * jnp.roll(images, 1, axis=0)
  return images, jnp.roll(labels, 1, axis=0).astype(jnp.int32), weight


def view_keys(seeds):
  """Per-example keys of fixed augmented views (teacher cache): one int32 seed per view."""
  return jax.vmap(jax.random.key)(seeds)


def augment_keys(images_uint8, keys, cfg):
  """As `augment`, with one key per example (a cached view is reproduced from its seed)."""
  size = cfg.image_size
  x = images_uint8.astype(jnp.float32)
  kind = cfg.augment.kind
  full = x.shape[-1] == 4  # whole-image canvases (data.load_resize=shorter_full)
  if kind == "crop_flip":  # square images (validate.check refuses shorter_full)
    if min(x.shape[1:3]) < size:
      x = resize(x, size)
    x = jax.vmap(lambda im, k: _crop(im, k, size, cfg.augment.pad))(x, keys)
  elif kind in ("rrc_flip", "rrc_flip_diffaug"):
    scale, ratio = tuple(cfg.augment.scale), tuple(cfg.augment.ratio)
    if full:
      width, transposed = canvas_geometry(x)
      x = jax.vmap(lambda im, k, w, t: _random_resized_crop(
          im[..., :3], k, size, scale, ratio, w, t))(x, keys, width, transposed)
    else:
      x = jax.vmap(lambda im, k: _random_resized_crop(im, k, size, scale, ratio))(x, keys)
  else:  # "none" (validate.check refuses kinds not in KINDS)
    return preprocess_eval(images_uint8, cfg)
  if cfg.augment.flip:
    flip_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    do_flip = jax.vmap(lambda k: jax.random.bernoulli(k))(flip_keys)
    x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1, :], x)
  x = normalise_float(x, cfg.mean, cfg.std)
  if kind == "rrc_flip_diffaug":
    x = diffaugment(x, keys)
  return x


# ------------------------------------------------------------------------------ DiffAugment
# sfarhat/dapt utils/augment.py:9-18 (ParamDiffAug), after Zhao & Bilen's DSA code.
DSA_OPS = ("flip", "color", "crop", "rotate", "scale", "cutout")
DSA_SCALE = 1.2
DSA_ROTATE_DEGREES = 15.0
DSA_CROP = 0.125  # translation: up to int(size * 0.125 + 0.5) pixels
DSA_CUTOUT = 0.5  # a square of int(size * 0.5 + 0.5) pixels
DSA_BRIGHTNESS, DSA_SATURATION, DSA_CONTRAST = 1.0, 2.0, 0.5


def diffaugment(x, keys):
  """Mode "S": one operation for the whole batch (drawn from the first example's key, so the
  same whatever the sharding), each example its own parameters. x: normalised [B,H,W,C]."""
  op = jax.random.randint(jax.random.fold_in(keys[0], 7), (), 0, len(DSA_OPS))
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 8), (4,)))(keys)  # [B, 4]
  lo = 1 / DSA_SCALE
  branches = [
      lambda x, u: dsa_flip(x, u[:, 0]),
      lambda x, u: dsa_color(x, u[:, 0], u[:, 1], u[:, 2]),
      lambda x, u: dsa_translate(x, *_shifts(u, x.shape[1], x.shape[2])),
      lambda x, u: dsa_affine(x, rotation_theta(
          (u[:, 0] - 0.5) * 2 * DSA_ROTATE_DEGREES / 180 * math.pi)),
      lambda x, u: dsa_affine(x, scale_theta(u[:, 0] * (DSA_SCALE - lo) + lo,
                                             u[:, 1] * (DSA_SCALE - lo) + lo)),
      lambda x, u: dsa_cutout(x, *_cutout_centres(u, x.shape[1], x.shape[2])),
  ]
  return jax.lax.switch(op, branches, x, u)


def _shifts(u, h, w):
  """DSA rand_crop: integer shifts in [-s, s], s = int(size * ratio + 0.5), per example."""
  sh, sw = int(h * DSA_CROP + 0.5), int(w * DSA_CROP + 0.5)
  ty = jnp.floor(u[:, 0] * (2 * sh + 1)).astype(jnp.int32) - sh
  tx = jnp.floor(u[:, 1] * (2 * sw + 1)).astype(jnp.int32) - sw
  return ty, tx


def _cutout_centres(u, h, w):
  """DSA rand_cutout: centres uniform in [0, size + (1 - cut % 2)) per axis."""
  ch, cw = int(h * DSA_CUTOUT + 0.5), int(w * DSA_CUTOUT + 0.5)
  cy = jnp.floor(u[:, 0] * (h + 1 - ch % 2)).astype(jnp.int32)
  cx = jnp.floor(u[:, 1] * (w + 1 - cw % 2)).astype(jnp.int32)
  return cy, cx, ch, cw


def dsa_flip(x, u):
  return jnp.where((u < 0.5)[:, None, None, None], x[:, :, ::-1], x)


def dsa_color(x, ub, us, uc):
  """Brightness (+ (u - 0.5) * 1), saturation (x (u * 2) around the channel mean), contrast
  (x (u + 0.5) around the image mean), in this order."""
  x = x + (ub[:, None, None, None] - 0.5) * DSA_BRIGHTNESS
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * (us[:, None, None, None] * DSA_SATURATION) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (uc[:, None, None, None] + DSA_CONTRAST) + mean


def dsa_translate(x, ty, tx):
  """out[i, j] = x[i + ty, j + tx], zero outside the image (DSA rand_crop)."""
  _, h, w, _ = x.shape

  def one(im, dy, dx):
    rows, cols = jnp.arange(h) + dy, jnp.arange(w) + dx
    ok = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    out = im[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
    return jnp.where(ok[..., None], out, 0.0)

  return jax.vmap(one)(x, ty, tx)


def dsa_cutout(x, cy, cx, ch, cw):
  """Zeroes rows [cy - ch//2, cy - ch//2 + ch) x the same for columns, clipped (DSA rand_cutout)."""
  _, h, w, _ = x.shape
  rows, cols = jnp.arange(h), jnp.arange(w)
  in_r = (rows[None] >= (cy - ch // 2)[:, None]) & (rows[None] < (cy - ch // 2 + ch)[:, None])
  in_c = (cols[None] >= (cx - cw // 2)[:, None]) & (cols[None] < (cx - cw // 2 + cw)[:, None])
  return jnp.where((in_r[:, :, None] & in_c[:, None, :])[..., None], 0.0, x)


def rotation_theta(angle):
  """[B, 2, 3] affine matrices of torch's affine_grid for DSA rand_rotate."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  z = jnp.zeros_like(angle)
  return jnp.stack([jnp.stack([c, s, z], -1), jnp.stack([-s, c, z], -1)], -2)


def scale_theta(sx, sy):
  z = jnp.zeros_like(sx)
  return jnp.stack([jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1)], -2)


def dsa_affine(x, theta):
  """torch F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=True),
  align_corners=True): bilinear, zeros outside. x [B,H,W,C], theta [B,2,3] maps the output's
  normalised (x, y) in [-1, 1] to the input's."""
  _, h, w, _ = x.shape
  xn = jnp.linspace(-1.0, 1.0, w) if w > 1 else jnp.zeros(1)
  yn = jnp.linspace(-1.0, 1.0, h) if h > 1 else jnp.zeros(1)
  gx, gy = jnp.meshgrid(xn, yn)  # [H, W]

  def one(im, t):
    sx = t[0, 0] * gx + t[0, 1] * gy + t[0, 2]
    sy = t[1, 0] * gx + t[1, 1] * gy + t[1, 2]
    px, py = (sx + 1) * (w - 1) / 2, (sy + 1) * (h - 1) / 2
    x0, y0 = jnp.floor(px), jnp.floor(py)
    out = 0.0
    for dy in (0, 1):
      for dx in (0, 1):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - jnp.abs(px - xi)) * (1 - jnp.abs(py - yi))
        ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        v = im[jnp.clip(yi, 0, h - 1).astype(jnp.int32), jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
        out = out + jnp.where(ok, weight, 0.0)[..., None] * v
    return out

  return jax.vmap(one)(x, theta)


def preprocess_eval(images_uint8, cfg):
  """Deterministic eval view: central crop of `eval_crop_fraction` (torchvision CenterCrop's
  rounding), resized to image_size. With data.load_resize=shorter at load_size 256 and a
  fraction 224/256: torchvision's Resize(256) + CenterCrop(224)."""
  x = images_uint8.astype(jnp.float32)
  frac = cfg.eval_crop_fraction
  if x.shape[-1] == 4:  # a whole-image canvas: the central crop of the image, upright
    return normalise_float(resize(_central_crops(x, frac), cfg.image_size), cfg.mean, cfg.std)
  return normalise_float(resize(image_ops.central_crop(x, frac), cfg.image_size), cfg.mean, cfg.std)


def _central_crops(x, frac):
  """[B, S, L, 4] canvases -> [B, c, c, 3]: the central c x c of each image, c = round(S x
  frac) (S: every image's short side), transposed back where it was stored transposed."""
  s = x.shape[1]
  c = int(round(s * frac))
  top = int(round((s - c) / 2.0))
  width, transposed = canvas_geometry(x)

  def one(im, w, t):
    left = jnp.round((w - c) / 2.0).astype(jnp.int32)
    out = jax.lax.dynamic_slice(im[..., :3], (top, left, 0), (c, c, 3))
    return jnp.where(t, out.transpose(1, 0, 2), out)

  return jax.vmap(one)(x, width, transposed)


def resize(x, size):
  if x.shape[1:3] == (size, size):
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)


def normalise_float(x, mean, std):
  """x in [0, 255] float -> (x / 255 - mean) / std."""
  return (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
