"""Adaptive Feature Transfer's regulariser R (Qiu et al., ICML 2024, arXiv 2406.07337).

R compares the batch's kernel (Gram) matrix of the downstream features g with that of the
pre-trained features phi weighted by rho = sigmoid(rho_logits), one learned weight per
pre-trained feature (so the student need only match the features useful for the task). Both
feature sets are centred over the batch and each row L2-normalised (+1e-8), then
R = sqrt(mean((K_g - K_phi)^2) + 1e-8), as the reference `prior.py` (KernelPrior) computes it.
"""

import jax
import jax.numpy as jnp

KERNELS = ("linear", "rbf")
EPS = 1e-8


def _centre_normalise(x):
  x = x - jnp.mean(x, axis=0, keepdims=True)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)


def _kernel(x, kind):
  if kind == "linear":
    return x @ x.T
  if kind == "rbf":  # exp(-||x_i - x_j||^2)
    sq = jnp.sum(jnp.square(x), axis=-1)
    return jnp.exp(-jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0))
  raise ValueError(f"unknown AFT kernel {kind!r}; valid: {list(KERNELS)}")


def aft(g: jax.Array, phi: jax.Array, rho_logits: jax.Array, kernel: str = "linear") -> jax.Array:
  """AFT's R for downstream features g [B, d_g] and pre-trained features phi [B, d_phi].

  rho_logits [d_phi]: the diagonal weights' logits (rho = sigmoid, initialised at 0 -> 0.5).
  rho_logits [d_phi, k]: the dense variant, phi is mapped by this matrix (no sigmoid).
  Several teachers: concatenate their features into phi; rho spans the concatenation.
  """
  g = g.astype(jnp.float32)
  phi = phi.astype(jnp.float32)
  if rho_logits.ndim == 1:
    target = phi * jax.nn.sigmoid(rho_logits)
  elif rho_logits.ndim == 2:
    target = phi @ rho_logits
  else:
    raise ValueError(f"rho_logits must be [d_phi] (diagonal) or [d_phi, k] (dense), got "
                     f"shape {rho_logits.shape}")
  k_g = _kernel(_centre_normalise(g), kernel)
  k_phi = _kernel(_centre_normalise(target), kernel)
  return jnp.sqrt(jnp.mean(jnp.square(k_g - k_phi)) + EPS)


def aft_feature_map(g: jax.Array, phi: jax.Array, v: jax.Array, b: jax.Array | None = None):
  """Paper B's "no kernel" variant: a learned linear map V from pre-trained to downstream
  features, MSE between the batch-centred g and phi V (+ b). g [B, d_g], v [d_phi, d_g]."""
  g = g.astype(jnp.float32)
  target = phi.astype(jnp.float32) @ v + (0.0 if b is None else b)
  g = g - jnp.mean(g, axis=0, keepdims=True)
  target = target - jnp.mean(target, axis=0, keepdims=True)
  return jnp.mean(jnp.square(target - g))
