"""Paper B's (Qiu et al., arXiv 2406.07337) factor-transfer baseline, after Kim, Park & Kwak,
"Paraphrasing Complex Network: Network Compression via Factor Transfer" (NeurIPS 2018, arXiv
1802.04977), as amazon-science/adaptive-feature-transfer computes it (prior.py:324-355, FTPrior).

Kim et al. train a convolutional paraphraser (an autoencoder on the teacher's feature map) whose
code is the "factor", and a translator on the student; the loss is the p = 1 distance between the
L2-normalised factors. Paper B's version works on pooled feature vectors with MLPs: the factor is
the code of an MLP autoencoder (encoder d -> d -> d/2 -> d/2, ReLU after each layer, and a
mirrored decoder; train_ae.py:83-98) trained offline by MSE reconstruction of the pre-trained
features (train_ae.py:10-71, saved as '<model>_<dataset>_ae.pt', :102-106, which run.py:42-43
loads for method 'ft'), and the translator is a 3-layer MLP from the student's features to the
factor's width, Linear-ReLU-Linear-ReLU-Linear with the last layer's WEIGHT zero-initialised
(prior.py:331-340; built elsewhere). The loss (prior.py:348-355):
  mean over the batch of || normalize(pred) - normalize(factor) ||_1   (sum over features).

Zero rows: normalize(0) = 0 here with a zero gradient (F.normalize's gradient there is 1 / 1e-12).
PyTorch's Linear initialises the bias uniformly, so the reference's pred = bias != 0 at the start;
a translator whose last layer has zero kernel AND zero bias (Flax's default bias) would predict 0
for every row and get no gradient: keep a non-zero bias there.
"""

import jax
import jax.numpy as jnp


def _unit_rows(x):
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  norm = jnp.sqrt(jnp.where(sq > 0, sq, 1.0))
  return jnp.where(sq > 0, x / norm, 0.0)


def ft_loss(pred: jax.Array, teacher_features: jax.Array) -> jax.Array:
  """Batch mean of the L1 distance between the L2-normalised rows of pred [B, d] (the
  translator's output) and teacher_features [B, d] (the factor; under stop_gradient)."""
  p = _unit_rows(pred.reshape(pred.shape[0], -1).astype(jnp.float32))
  t = jax.lax.stop_gradient(
      _unit_rows(teacher_features.reshape(teacher_features.shape[0], -1).astype(jnp.float32)))
  return jnp.mean(jnp.sum(jnp.abs(p - t), axis=-1))
