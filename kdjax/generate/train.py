r"""Training a small text-conditioned latent diffusion pipeline of Stable Diffusion's architecture
on an image-classification corpus, written as a diffusers-layout directory that
`python -m kdjax.generate` loads as it loads SD v1.4 (experiments/train_tiny_diffusion.py).

  python experiments/train_tiny_diffusion.py --config=configs/synth/tiny_diffusion.py \
      --workdir=runs/tiny_diffusion

The parts are diffusers 0.39's Flax classes, the ones the generation stage loads:
FlaxAutoencoderKL (the VAE), FlaxUNet2DConditionModel, transformers' FlaxCLIPTextModel, SD v1's
noise schedule (scaled-linear betas 0.00085 to 0.012 over 1,000 steps). Two stages, as latent
diffusion is trained (Rombach et al. 2022):

1. `vae`: the autoencoder on the corpus' images, reconstruction MSE + gen.kl_weight x KL to
   N(0, I) (per element). Then its latents' scaling factor is set so that the scaled latents
   of the corpus have unit standard deviation (SD v1's 0.18215 was found the same way), and
   written into the VAE's config, where the sampler reads it.
2. `unet`: the UNet's target at uniformly drawn timesteps on the scaled latents, the caption's
   text-encoder states as cross-attention context; the caption is replaced by the empty prompt
   with probability gen.cond_dropout, so classifier-free guidance works. The target
   (gen.prediction_type, written into the scheduler's config for the sampler) is
   v-prediction (Salimans & Ho 2022; SD 2's choice) by default: its loss weighs the noisiest
   steps, where a sample's class is decided, as an x0 error, while SD v1's epsilon target
   gives them almost no weight. Measured on the transfer miniature's generator (P = MNIST-5k,
   1,500 steps): with epsilon the UNet's loss with the right caption, a wrong one and the empty
   one differed by under 3% at every timestep and the probed teacher read the images at
   chance (0.14-0.16 over guidance 1-4); with v-prediction, 0.89 at guidance 3 (the
   P-trained ResNet: 0.997).

Captions come from the corpus' class names through the generation stage's own prompt code
(`plan.prompt_name`, gen.templates, gen.rename), so a class is prompted at sampling time with
words it was trained on. The text encoder is transformers' CLIP text encoder over the
byte-level vocabulary of `random_pipeline` (no network here), randomly initialised and, by
default (gen.train_text_encoder), trained with the UNet: every step encodes the few distinct
captions once and gathers their states per example. Frozen at random, as Stable Diffusion
freezes its pre-trained CLIP, its digits' caption states differ by 3-8% of their norm (one
character of ~20); trained with the v-prediction UNet, by 26-47%. (Measured with the epsilon
target only: frozen, the images read at chance, 0.12-0.13. The frozen encoder with
v-prediction was not tried.) How
distinct the caption states are, before and after training, is in `report["conditioning"]`;
how a classifier reads the images each class prompt draws is measured by
kdjax.generate.quality (experiments/transfer.py).

Like the trainer: one `jax.jit` per stage over a global batch sharded on the mesh's data axis
(the corpus is replicated on the devices, each device gathers its rows), parameters replicated,
state donated, randomness `fold_in(key, step)` and the epoch's permutation a pure function of
(seed, stage, epoch): a run killed at any point and restarted resumes from its last checkpoint
and ends with the same bits as an uninterrupted run. Checkpoints (orbax, kdjax.checkpoint) per
stage in WORKDIR/<stage>/; the finished pipeline in WORKDIR/pipeline/ (written to a temporary
directory and renamed: a directory there is complete); WORKDIR/report.json the losses, the
stages' FLOPs and seconds. A workdir made with another config is refused.
"""

import dataclasses
import time
from pathlib import Path

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from kdjax import checkpoint, configlib, errors, files, metric_writers
from kdjax import sharding as shd
from kdjax import steps as steps_lib
from kdjax.data import sources
from kdjax.generate import pipeline, plan, random_pipeline

SPEC_FILE = "train.json"
REPORT_FILE = "report.json"
PIPELINE_DIR = "pipeline"
STAGES = ("vae", "unet")


class TrainError(errors.UserError):
  """Generator training cannot start or resume; the message says how to fix it."""


# ------------------------------------------------------------------------------ architecture


def spec_of(cfg) -> dict:
  """The pipeline's architecture: random_pipeline.ARCHITECTURES[gen.arch] with gen's widths."""
  g = cfg.gen
  if g.arch not in random_pipeline.ARCHITECTURES:
    raise TrainError(f"unknown gen.arch {g.arch!r}; valid: "
                     f"{sorted(random_pipeline.ARCHITECTURES)}")
  base = random_pipeline.ARCHITECTURES[g.arch]
  spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
  if g.unet_channels:
    spec["unet"]["block_out_channels"] = tuple(int(c) for c in g.unet_channels)
  if g.vae_channels:
    spec["vae"]["block_out_channels"] = tuple(int(c) for c in g.vae_channels)
  vae_scale = 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
  multiple = vae_scale * 2 ** (len(spec["unet"]["block_out_channels"]) - 1)
  if g.resolution % multiple:
    raise TrainError(f"gen.resolution={g.resolution} must be a multiple of {multiple} (the "
                     "VAE's and the UNet's downsampling)")
  spec["unet"]["sample_size"] = g.resolution // vae_scale
  spec["vae"]["sample_size"] = g.resolution
  return spec


@dataclasses.dataclass
class Parts:
  spec: dict
  text: object
  unet: object
  vae: object
  text_params: dict  # the text encoder's initial (random) weights
  caption_ids: np.ndarray  # int32 [classes * templates + 1, L]: every caption, the empty one last
  captions: list  # [classes][templates] prompt strings

  def contexts(self, text_params) -> np.ndarray:
    """float32 [classes * templates + 1, L, D]: the captions' text-encoder states."""
    return np.asarray(encode_captions(self.text, text_params, self.caption_ids), np.float32)


def encode_captions(text, text_params, caption_ids):
  return text(caption_ids, params=text_params)[0]


def build(cfg, class_names) -> Parts:
  """The modules, the text encoder's initial weights and the captions' token ids."""
  g = cfg.gen
  if not g.templates or any("{c}" not in t for t in g.templates):
    raise TrainError(f"gen.templates {tuple(g.templates)} must each contain '{{c}}' (the class "
                     "name), e.g. ('a handwritten digit {c}',)")
  spec = spec_of(cfg)
  vocab = random_pipeline.byte_vocab()
  text, unet, vae = random_pipeline.modules(spec, len(vocab))
  text_params = random_pipeline.random_text_params(text, spec["max_length"], cfg.seed)
  rename = plan.parse_rename(g.rename)
  captions = [[t.format(c=plan.prompt_name(name, rename)) for t in g.templates]
              for name in class_names]
  ids = tokenize(vocab, [p for row in captions for p in row] + [""], spec["max_length"])
  return Parts(spec, text, unet, vae, text_params, ids, captions)


def tokenize(vocab: dict, prompts, max_length: int) -> np.ndarray:
  """What the pipeline's CLIPTokenizer gives for the byte-level vocabulary, without writing it:
  BOS, one token per character (the last of a word with '</w>', spaces dropped), EOS, padded
  with EOS and truncated to max_length (checked against the tokenizer in the tests)."""
  chars = random_pipeline.bytes_to_unicode()
  bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
  out = np.full((len(prompts), max_length), eos, np.int32)
  for i, prompt in enumerate(prompts):
    tokens = [bos]
    for word in prompt.lower().split():
      encoded = [chars[b] for b in word.encode("utf-8")]
      tokens += [vocab[c] for c in encoded[:-1]] + [vocab[encoded[-1] + "</w>"]]
    tokens = tokens[:max_length - 1] + [eos]
    out[i, :len(tokens)] = tokens
  return out


def conditioning(contexts: np.ndarray, num_classes: int, templates: int) -> dict:
  """How distinct the classes' caption states are, relative to their size: per template, the
  distance between two classes' states (flattened) over the mean norm of the states, the
  smallest and the mean pair; and the captions' distance to the empty prompt's states, likewise
  (0: indistinguishable; independent random vectors of equal norm: 1.41)."""
  states = contexts[:-1].reshape(num_classes, templates, -1).astype(np.float64)
  size = np.linalg.norm(states, axis=-1).mean()
  pairs = np.triu_indices(num_classes, 1)
  d = np.stack([np.linalg.norm(states[:, None, t] - states[None, :, t], axis=-1)[pairs]
                for t in range(templates)])
  empty = contexts[-1].reshape(-1).astype(np.float64)
  to_empty = np.linalg.norm(states - empty, axis=-1)
  return {"min_class_distance_rel": float(d.min() / size),
          "mean_class_distance_rel": float(d.mean() / size),
          "mean_distance_to_empty_rel": float(to_empty.mean() / size)}


# --------------------------------------------------------------------------------- the corpus


def corpus(cfg):
  """(uint8 images [N, S, S, 3] as stored, int32 labels [N], class names) of data.train_split."""
  src = sources.open_source(cfg.data, cfg.data.train_split)
  images, labels = src.read(np.arange(len(src)))
  if images.shape[1] != images.shape[2]:
    raise TrainError(f"the corpus' images are {images.shape[1:3]}: set data.load_size to store "
                     "them square")
  return images, labels, list(src.class_names)


def model_input(images, resolution: int):
  """uint8 [B, S, S, 3] -> float [B, 3, R, R] in [-1, 1] (NCHW, diffusers' layout): nearest
  upsampling by an integer factor (the sampler's antialiased downsampling undoes it), else
  antialiased resizing."""
  x = images.astype(jnp.float32) / 127.5 - 1.0
  size = x.shape[1]
  if resolution % size == 0:
    f = resolution // size
    x = jnp.repeat(jnp.repeat(x, f, axis=1), f, axis=2)
  elif resolution != size:
    x = jax.image.resize(x, (x.shape[0], resolution, resolution, 3), "linear", antialias=True)
  return jnp.transpose(x, (0, 3, 1, 2))


def epoch_rows(seed: int, stage: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, stage, epoch]).permutation(n)


def batch_rows(seed: int, stage: int, step: int, batch: int, n: int) -> np.ndarray:
  """Rows of step `step` (0-based): epochs of permutations, a pure function of its arguments;
  the rows of one step may straddle two epochs."""
  start = step * batch
  first, last = start // n, (start + batch - 1) // n
  rows = np.concatenate([epoch_rows(seed, stage, e, n) for e in range(first, last + 1)])
  offset = start - first * n
  return rows[offset:offset + batch].astype(np.int32)


# ------------------------------------------------------------------------------------ losses


def vae_loss(vae, params, images, key, resolution: int, kl_weight: float):
  x = model_input(images, resolution)
  posterior = vae.apply({"params": params}, x, method=vae.encode).latent_dist
  recon = vae.apply({"params": params}, posterior.sample(key), method=vae.decode).sample
  mse = jnp.mean(jnp.square(recon - x))
  kl = 0.5 * jnp.mean(jnp.square(posterior.mean) + posterior.var - 1.0 - posterior.logvar)
  return mse + kl_weight * kl, {"recon_mse": mse, "kl": kl}


def noise_schedule():
  """(the training scheduler, its state): DDPM on SD v1's betas."""
  s = random_pipeline.SD_V1_SCHEDULE
  sched = diffusers.FlaxDDPMScheduler(beta_start=s["beta_start"], beta_end=s["beta_end"],
                                      beta_schedule=s["beta_schedule"],
                                      num_train_timesteps=s["num_train_timesteps"])
  return sched, sched.create_state()


PREDICTIONS = ("epsilon", "v_prediction")


def unet_loss(unet, params, moments, labels, contexts, key, sched, sched_state, scaling: float,
              templates: int, cond_dropout: float, prediction: str = "epsilon"):
  """moments: [B, h, w, 2c] the VAE posterior's mean and log-variance (NHWC); contexts: every
  caption's text-encoder states, the empty caption's last."""
  k_latent, k_t, k_noise, k_template, k_drop = jax.random.split(key, 5)
  mean, logvar = jnp.split(moments, 2, axis=-1)
  z0 = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_latent, mean.shape)
  z0 = jnp.transpose(z0, (0, 3, 1, 2)) * scaling
  batch = z0.shape[0]
  t = jax.random.randint(k_t, (batch,), 0, sched.config.num_train_timesteps)
  noise = jax.random.normal(k_noise, z0.shape)
  zt = sched.add_noise(sched_state, z0, noise, t)
  caption = labels * templates + jax.random.randint(k_template, (batch,), 0, templates)
  empty = contexts.shape[0] - 1
  caption = jnp.where(jax.random.uniform(k_drop, (batch,)) < cond_dropout, empty, caption)
  out = unet.apply({"params": params}, zt, t, encoder_hidden_states=contexts[caption]).sample
  target = noise if prediction == "epsilon" else sched.get_velocity(sched_state, z0, noise, t)
  mse = jnp.mean(jnp.square(out - target))
  return mse, {"mse": mse}


# --------------------------------------------------------------------------------- the stages


def _optimizer(lr: float, steps: int, warmup: int):
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, warmup), max(steps, warmup + 1))
  return optax.adamw(schedule, weight_decay=0.0)


def _fit(name: str, workdir: Path, mesh, params, loss_fn, data: tuple, cfg, steps: int,
         lr: float) -> tuple[dict, dict]:
  """Trains `params` for `steps` on loss_fn(params, rows, key, *data) (or resumes, or reads the
  finished stage back): (params on the host, the stage's report)."""
  g = cfg.gen
  stage_id = STAGES.index(name)
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  shd.check_global_batch(g.batch_size, mesh, "gen.batch_size")
  tx = _optimizer(lr, steps, g.warmup_steps)
  host = jax.tree.map(np.asarray, params)
  shapes = {"step": jax.ShapeDtypeStruct((), np.int32), "params": jax.eval_shape(lambda: host),
            "opt_state": jax.eval_shape(tx.init, host)}
  state_sh = jax.tree.map(lambda _: repl, shapes)
  key = jax.random.key(cfg.seed + 1000 * (stage_id + 1))

  def train_step(state, rows, *data):
    k = jax.random.fold_in(key, state["step"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], rows, k,
                                                                   *data)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return ({"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
             "opt_state": opt_state}, {"loss": loss, **aux})

  step_fn = jax.jit(train_step, in_shardings=(state_sh, batch_sh) + (repl,) * len(data),
                    out_shardings=(state_sh, repl), donate_argnums=(0,))
  ckpt = checkpoint.Checkpointer(str(workdir / name), max_to_keep=2)
  restored = ckpt.restore_latest(checkpoint.abstract_like(shapes, state_sh))
  meta = {"history": [], "wall_time_s": 0.0}
  if restored is not None:
    state, meta = restored
    logging.info("%s: resumed at step %d/%d", name, int(state["step"]), steps)
  else:
    state = shd.put_global(jax.tree.map(lambda x: np.array(x, copy=True), {
        "step": np.int32(0), "params": host,
        "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(host)}), state_sh)
  start = int(state["step"])
  n = int(data[0].shape[0])
  put = lambda s: shd.global_from_host(  # noqa: E731
      batch_rows(cfg.seed, stage_id, s, g.batch_size, n), batch_sh)
  flops = meta.get("flops_per_step") or steps_lib.xla_flops(step_fn, state, put(0), *data)
  meta["flops_per_step"] = flops
  progress = metric_writers.Progress(steps, g.batch_size, start)
  t0 = time.perf_counter()
  wall0 = meta["wall_time_s"]
  for s in range(start, steps):
    state, metrics = step_fn(state, put(s), *data)
    done = s + 1
    log, save = done % g.log_every_steps == 0, done % g.checkpoint_every_steps == 0
    if log or save or done == steps:
      shown = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(shown["loss"]):
        raise errors.NonFiniteLoss(
            f"generator stage {name}: non-finite loss at step {done} ({shown}); stopped before "
            f"checkpointing it: lower gen.{name}_learning_rate (the run resumes from its last "
            "checkpoint only with the same config: use a new --workdir)")
    if log or done == steps:
      meta["history"].append({"step": done, **shown})
      progress.report(done, {f"{name}/{k}": v for k, v in shown.items()})
    if save or done == steps:
      meta["wall_time_s"] = wall0 + time.perf_counter() - t0
      ckpt.save(done, state, {**meta, "stage": name, "step": done})
  ckpt.close()
  out = jax.tree.map(np.asarray, jax.device_get(state["params"]))
  report = {"steps": steps, "batch_size": g.batch_size, "learning_rate": lr,
            "flops_per_step": flops, "flops": flops * steps,
            "wall_time_s": meta.get("wall_time_s", 0.0), "history": meta["history"]}
  return out, report


def encode_corpus(vae, vae_params, images, resolution: int, mesh, batch: int = 500):
  """The VAE posterior's moments [N, h, w, 2c] (mean, log-variance; NHWC) of every image."""
  repl = shd.replicated(mesh)

  def moments(p, x):
    q = vae.apply({"params": p}, model_input(x, resolution), method=vae.encode).latent_dist
    return jnp.concatenate([q.mean, q.logvar], axis=-1)

  encode = jax.jit(moments, in_shardings=(repl, repl), out_shardings=repl)
  params = shd.put_global(vae_params, jax.tree.map(lambda _: repl, vae_params))
  return np.concatenate([np.asarray(encode(params, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def latent_scaling(moments: np.ndarray, seed: int) -> float:
  """1 / the standard deviation of the corpus' latents (one posterior sample per image)."""
  mean, logvar = np.split(moments.astype(np.float64), 2, axis=-1)
  z = mean + np.exp(0.5 * logvar) * np.random.default_rng(seed).standard_normal(mean.shape)
  return float(1.0 / z.std())


# ------------------------------------------------------------------------------------ the run


def _check_spec(work: Path, cfg) -> None:
  """Refuses a workdir trained with another config (logging and checkpoint intervals aside);
  writes the config into a new one."""
  want = files.as_json({"format": 1, **configlib.flatten(cfg.to_dict(), "config.")})
  path = work / SPEC_FILE
  if path.exists():
    diff = files.differences(files.read_json(path), want, ignore=(
        "config.gen.log_every_steps", "config.gen.checkpoint_every_steps"))
    if diff:
      raise TrainError(f"{work} holds a generator trained with another config (differs in "
                       f"{diff}); use a new --workdir, or delete this one to start over")
  else:
    files.write_json(path, want)



def train(cfg, workdir: str) -> dict:
  """Trains (or resumes, or reads back) the generator; returns WORKDIR/report.json's content.
  The pipeline is WORKDIR/pipeline/."""
  work = Path(workdir).resolve()
  work.mkdir(parents=True, exist_ok=True)
  out = work / PIPELINE_DIR
  if (out / "model_index.json").is_file() and (work / REPORT_FILE).is_file():
    _check_spec(work, cfg)
    return files.read_json(work / REPORT_FILE)
  _check_spec(work, cfg)
  g = cfg.gen
  if g.prediction_type not in PREDICTIONS:
    raise TrainError(f"unknown gen.prediction_type {g.prediction_type!r}; valid: {PREDICTIONS}")
  images, labels, class_names = corpus(cfg)
  parts = build(cfg, class_names)
  mesh = shd.make_mesh()
  repl = shd.replicated(mesh)
  t_images = shd.global_from_host(images, repl)
  t_labels = shd.global_from_host(labels.astype(np.int32), repl)
  logging.info("corpus %s %s: %d images of %d classes at %d px -> generator at %d px; "
               "captions e.g. %r", cfg.data.name, cfg.data.train_split, len(images),
               len(class_names), images.shape[1], g.resolution, parts.captions[0][0])
  key = jax.random.key(cfg.seed)
  report = {"corpus": {"name": cfg.data.name, "split": cfg.data.train_split,
                       "images": len(images), "classes": class_names,
                       "stored_size": int(images.shape[1])},
            "resolution": g.resolution, "architecture": files.as_json(parts.spec),
            "prediction_type": g.prediction_type,
            "conditioning": {"initial": conditioning(parts.contexts(parts.text_params),
                                                     len(class_names), len(g.templates))},
            "captions": parts.captions, "devices": mesh.devices.size,
            "platform": jax.devices()[0].platform}
  logging.info("random text encoder's caption states: closest two classes %.3f apart, mean "
               "pair %.3f (relative to their norm)",
               report["conditioning"]["initial"]["min_class_distance_rel"],
               report["conditioning"]["initial"]["mean_class_distance_rel"])

  vae = parts.vae
  vae_init = parts.vae.init_weights(jax.random.fold_in(key, 1))

  def vae_objective(params, rows, k, images):
    return vae_loss(vae, params, images[rows], k, g.resolution, g.kl_weight)

  vae_params, report["vae"] = _fit("vae", work, mesh, vae_init, vae_objective, (t_images,), cfg,
                                   g.vae_steps, g.vae_learning_rate)
  moments = encode_corpus(vae, vae_params, images, g.resolution, mesh)
  scaling = latent_scaling(moments, cfg.seed)
  report["vae"]["scaling_factor"] = scaling
  logging.info("vae: latents %s, scaling factor %.4f", moments.shape[1:], scaling)

  unet = parts.unet
  sched, sched_state = noise_schedule()
  init = {"unet": unet.init_weights(jax.random.fold_in(key, 2)), "text": parts.text_params}
  templates = len(g.templates)
  text = parts.text

  def unet_objective(params, rows, k, moments, labels, caption_ids):
    text_params = params["text"]
    if not g.train_text_encoder:
      text_params = jax.lax.stop_gradient(text_params)
    contexts = encode_captions(text, text_params, caption_ids)  # every caption, once per step
    return unet_loss(unet, params["unet"], moments[rows], labels[rows], contexts, k, sched,
                     sched_state, scaling, templates, g.cond_dropout, g.prediction_type)

  data = (shd.global_from_host(moments, repl), t_labels,
          shd.global_from_host(parts.caption_ids, repl))
  trained, report["unet"] = _fit("unet", work, mesh, init, unet_objective, data, cfg,
                                 g.unet_steps, g.unet_learning_rate)
  unet_params, text_params = trained["unet"], trained["text"]
  report["conditioning"]["trained"] = conditioning(parts.contexts(text_params),
                                                   len(class_names), templates)
  report["text_encoder"] = "trained with the UNet" if g.train_text_encoder else "frozen, random"

  spec = dict(parts.spec)
  spec["vae"] = {**spec["vae"], "scaling_factor": scaling}
  spec["prediction_type"] = g.prediction_type
  tmp = Path(files.tmp_name(out))
  random_pipeline.save_random_pipeline(tmp, seed=cfg.seed, spec=spec, params={
      "unet": unet_params, "vae": vae_params, "text_encoder": text_params})
  files.replace_dir(tmp, out)
  report["flops"] = report["vae"]["flops"] + report["unet"]["flops"]
  report["wall_time_s"] = report["vae"]["wall_time_s"] + report["unet"]["wall_time_s"]
  report["pipeline"] = str(out)
  report["pipeline_sha1"] = pipeline.pipeline_sha1(out)
  files.write_json(work / REPORT_FILE, report)
  logging.info("wrote %s (%.3g FLOPs, %s of training)", out, report["flops"],
               metric_writers.hms(report["wall_time_s"]))
  return report
