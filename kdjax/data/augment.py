"""On-device augmentation and normalisation of uint8 NHWC batches (runs inside `jax.jit`).

Each example draws its randomness from `jax.random.split(key, B)` over the *global* batch, so the
augmented batch is the same whatever the number of devices it is sharded over.

Kinds:
- "crop_flip": zero-pad by `pad` pixels, random `size` x `size` crop, horizontal flip (the CIFAR
  recipe, torchvision RandomCrop(padding) + RandomHorizontalFlip). Images larger than `size`
  (set `data.load_size`) are cropped as they are (paper A: resize 256, random crop 224);
  smaller ones are first resized up to `size`.
- "rrc_flip": random-resized-crop (area `scale`, aspect `ratio`, as torchvision
  RandomResizedCrop, without its rejection loop) to `size`, then flip.
- "none": resize only.
`flip=False` disables flipping (digits and text are not mirror-symmetric).
"""

import jax
import jax.numpy as jnp

from kdjax import errors

KINDS = ("crop_flip", "rrc_flip", "none")  # data.augment.kind


def _crop(image, key, size, pad):
  image = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  h, w = image.shape[:2]
  ky, kx = jax.random.split(key)
  y = jax.random.randint(ky, (), 0, h - size + 1)
  x = jax.random.randint(kx, (), 0, w - size + 1)
  return jax.lax.dynamic_slice(image, (y, x, 0), (size, size, image.shape[2]))


def _random_resized_crop(image, key, size, scale, ratio):
  h, w = image.shape[:2]
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = h * w * jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1])
  log_ratio = jax.random.uniform(k_ratio, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
  aspect = jnp.exp(log_ratio)
  crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, w)
  crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, h)
  y0 = jax.random.uniform(k_y, ()) * (h - crop_h)
  x0 = jax.random.uniform(k_x, ()) * (w - crop_w)
  sy, sx = size / crop_h, size / crop_w
  # scale_and_translate maps input coordinate u to output u * s + t.
  return jax.image.scale_and_translate(
      image, (size, size, image.shape[2]), (0, 1), jnp.stack([sy, sx]),
      jnp.stack([-y0 * sy, -x0 * sx]), method="linear", antialias=True)


def augment(images_uint8, key, cfg):
  """uint8 [B,H,W,C] -> float32 [B,size,size,C] normalised, augmented per `cfg.augment`."""
  return augment_keys(images_uint8, jax.random.split(key, images_uint8.shape[0]), cfg)


def view_keys(seeds):
  """Per-example keys of fixed augmented views (teacher cache): one int32 seed per view."""
  return jax.vmap(jax.random.key)(seeds)


def augment_keys(images_uint8, keys, cfg):
  """As `augment`, with one key per example (a cached view is reproduced from its seed)."""
  size = cfg.image_size
  x = images_uint8.astype(jnp.float32)
  kind = cfg.augment.kind
  if kind == "crop_flip":
    if min(x.shape[1:3]) < size:
      x = resize(x, size)
    x = jax.vmap(lambda im, k: _crop(im, k, size, cfg.augment.pad))(x, keys)
  elif kind == "rrc_flip":
    x = jax.vmap(lambda im, k: _random_resized_crop(
        im, k, size, tuple(cfg.augment.scale), tuple(cfg.augment.ratio)))(x, keys)
  elif kind == "none":
    x = resize(x, size)
  else:
    raise errors.UserError(f"unknown data.augment.kind {kind!r}; valid: {sorted(KINDS)}")
  if cfg.augment.flip and kind != "none":
    flip_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    do_flip = jax.vmap(lambda k: jax.random.bernoulli(k))(flip_keys)
    x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1, :], x)
  return normalise_float(x, cfg.mean, cfg.std)


def preprocess_eval(images_uint8, cfg):
  """Deterministic eval view: central crop of `eval_crop_fraction`, resized to image_size."""
  x = images_uint8.astype(jnp.float32)
  frac = cfg.eval_crop_fraction
  if frac < 1.0:
    h, w = x.shape[1:3]
    ch, cw = int(round(h * frac)), int(round(w * frac))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    x = x[:, y0:y0 + ch, x0:x0 + cw]
  return normalise_float(resize(x, cfg.image_size), cfg.mean, cfg.std)


def resize(x, size):
  if x.shape[1:3] == (size, size):
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)


def normalise_float(x, mean, std):
  """x in [0, 255] float -> (x / 255 - mean) / std."""
  return (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
