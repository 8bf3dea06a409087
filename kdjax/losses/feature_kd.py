"""The feature-KD baseline of paper B (Qiu et al., arXiv 2406.07337; FitNets-style, Romero et
al., arXiv 1412.6550): a learned linear map W from the downstream (student) features to the
pre-trained features, trained to regress all of them with MSE. Unlike AFT it cannot ignore
pre-trained features that do not help the task (the direction matters: paper B, arXiv
2406.07337)."""

import jax
import jax.numpy as jnp


def feature_kd(g: jax.Array, phi: jax.Array, w: jax.Array, b: jax.Array | None = None):
  """mean((g W + b - phi)^2); g [B, d_g], phi [B, d_phi], w [d_g, d_phi], b [d_phi]."""
  pred = g.astype(jnp.float32) @ w + (0.0 if b is None else b)
  return jnp.mean(jnp.square(pred - phi.astype(jnp.float32)))
