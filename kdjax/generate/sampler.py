"""The sampler: prompt ids and seeds in, uint8 images out, as one jitted function (text encoder,
classifier-free guidance, the scheduler's steps in a `fori_loop`, VAE decode, antialiased resize
to the stored size), its sharded form for a mesh, and its FLOP count."""

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import sharding as shd
from kdjax import steps as steps_lib
from kdjax.generate.pipeline import Pipeline
from kdjax.generate.plan import GenerateError


def make_sampler(pipe: Pipeline, synth, out_size: int, count_trips: int | None = None):
  """f(params, prompt_ids [B,L], negative_ids [1,L], seeds [B]) -> uint8 images [B,S,S,3].

  Pure and jittable: the initial latents of image b are normal(key(seeds[b])), so an image
  depends on its own seed and prompt (up to float rounding, which can differ with the batch
  size, dtype and device). The loop runs over all of the scheduler's timesteps (PNDM without
  its PRK steps has num_inference_steps + 1, as diffusers' PyTorch pipeline runs them).
  `count_trips`: run only that many steps, as straight-line code: for counting FLOPs
  (`sampler_flops`), since XLA's cost analysis counts a loop's body once."""
  res, steps, guidance = synth.resolution, synth.num_inference_steps, synth.guidance_scale
  multiple = pipe.vae_scale * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
  if res % multiple:
    raise GenerateError(f"synth.resolution={res} must be a multiple of {multiple} (the VAE's "
                        "and the UNet's downsampling)")
  latent_shape = (pipe.unet.config.in_channels, res // pipe.vae_scale, res // pipe.vae_scale)
  cfg_guidance = guidance > 1.0  # classifier-free guidance: a conditional and an empty prompt
  scaling = pipe.vae.config.scaling_factor
  sched = pipe.scheduler

  def pairs(x):  # [B, 2, ...] -> [2B, ...]: example b's two rows stay on b's device
    return x.reshape((-1,) + x.shape[2:])

  def sample(params, ids, negative_ids, seeds):
    encode = lambda t: pipe.text_encoder(t, params=params["text_encoder"])[0]  # noqa: E731
    context = encode(ids)
    batch = ids.shape[0]
    if cfg_guidance:  # rows 2b, 2b+1: example b unconditional, conditional
      negative = jnp.broadcast_to(encode(negative_ids), context.shape)
      context = pairs(jnp.stack([negative, context], axis=1))
    latents = jax.vmap(lambda s: jax.random.normal(jax.random.key(s), latent_shape))(seeds)
    state = sched.set_timesteps(params["scheduler"], num_inference_steps=steps,
                                shape=latents.shape)
    latents = latents * state.init_noise_sigma

    def body(i, carry):
      latents, state = carry
      t = jnp.asarray(state.timesteps, jnp.int32)[i]
      x = pairs(jnp.stack([latents, latents], axis=1)) if cfg_guidance else latents
      x = sched.scale_model_input(state, x, t)
      eps = pipe.unet.apply({"params": params["unet"]}, x,
                            jnp.full((x.shape[0],), t, jnp.int32),
                            encoder_hidden_states=context).sample.astype(jnp.float32)
      if cfg_guidance:
        eps = eps.reshape((batch, 2) + eps.shape[1:])
        uncond, cond = eps[:, 0], eps[:, 1]
        eps = uncond + guidance * (cond - uncond)
      latents, state = sched.step(state, eps, t, latents).to_tuple()
      return latents, state

    if count_trips is None:
      latents, _ = jax.lax.fori_loop(0, state.timesteps.shape[0], body, (latents, state))
    else:
      for i in range(count_trips):
        latents, state = body(i, (latents, state))
    image = pipe.vae.apply({"params": params["vae"]}, latents / scaling,
                           method=pipe.vae.decode).sample
    image = jnp.transpose(image.astype(jnp.float32) / 2 + 0.5, (0, 2, 3, 1))
    if out_size != res:  # match the real dataset: antialiased (area-averaging) downsampling
      image = jax.image.resize(image, (batch, out_size, out_size, 3), synth.resize_method,
                               antialias=True)
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)

  return sample


def sharded_sampler(pipe: Pipeline, synth, out_size: int, mesh):
  """(jitted sampler, its params on `mesh`): prompts, seeds and images sharded on the data axis,
  params and the negative prompt replicated. Params are placed from host copies (a committed
  single-device array could not be device_put onto a multi-process sharding)."""
  repl, batch_sh = shd.replicated(mesh), shd.batch_sharding(mesh)
  host = jax.tree.map(np.asarray, pipe.params)
  params = shd.put_global(host, jax.tree.map(lambda _: repl, host))
  sampler = jax.jit(make_sampler(pipe, synth, out_size),
                    in_shardings=(repl, batch_sh, repl, batch_sh), out_shardings=batch_sh)
  return sampler, params


def num_trips(pipe: Pipeline, synth) -> int:
  """How many UNet steps the sampler runs (the scheduler's timesteps)."""
  state = pipe.scheduler.set_timesteps(pipe.params["scheduler"], synth.num_inference_steps,
                                       (1, 4, 8, 8))
  return int(state.timesteps.shape[0])


def sampler_flops(pipe: Pipeline, synth, out_size: int, *args) -> float:
  """XLA's FLOPs of one sampler call on `args` (arrays or ShapeDtypeStructs): the programs with
  one and two straight-line steps are lowered (not compiled) and extrapolated to every step."""
  one, two = (steps_lib.xla_flops(jax.jit(make_sampler(pipe, synth, out_size, count_trips=k)),
                                  *args) for k in (1, 2))
  return one + (num_trips(pipe, synth) - 1) * (two - one)
