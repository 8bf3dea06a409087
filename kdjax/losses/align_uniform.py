"""Alignment and uniformity of L2-normalised embeddings (Wang & Isola, arXiv 2005.10242), the
contrastive distillation terms of paper A (Farhat & Chen, arXiv 2404.03263)."""

import jax
import jax.numpy as jnp


def alignment(z_s: jax.Array, z_t: jax.Array, alpha: float = 2.0) -> jax.Array:
  """mean_i ||z_s_i - z_t_i||_2 ** alpha over the batch; z_s, z_t [B, D] already normalised."""
  squared = jnp.sum(jnp.square(z_s.astype(jnp.float32) - z_t.astype(jnp.float32)), axis=-1)
  if alpha == 2.0:  # no square root: its gradient is undefined where z_s_i == z_t_i
    return jnp.mean(squared)
  return jnp.mean(squared ** (alpha / 2))


def uniformity(z: jax.Array, t: float = 2.0) -> jax.Array:
  """log of the mean over pairs i < j of exp(-t ||z_i - z_j||^2); z [B, D], B >= 2.

  Computed as a masked log-sum-exp over the batch's Gram matrix (stable for large t).
  """
  z = z.astype(jnp.float32)
  b = z.shape[0]
  sq_norms = jnp.sum(jnp.square(z), axis=-1)
  sq_dists = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (z @ z.T), 0.0)
  pairs = jnp.triu(jnp.ones((b, b), bool), k=1)
  return (jax.nn.logsumexp(jnp.where(pairs, -t * sq_dists, -jnp.inf))
          - jnp.log(b * (b - 1) / 2.0))
