"""kdjax.losses against independent NumPy implementations of the papers' formulas (float64
loops, no shared code), their defining properties, and the same values on 1 and 8 devices."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses

RNG = np.random.RandomState(0)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------- NumPy references (float64)


def np_alignment(zs, zt, alpha):
  return np.mean([np.linalg.norm(a - b) ** alpha for a, b in zip(zs, zt)])


def np_uniformity(z, t):
  vals = [np.exp(-t * np.sum((z[i] - z[j]) ** 2))
          for i, j in itertools.combinations(range(len(z)), 2)]
  return np.log(np.mean(vals))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kd(s, t, temp):
  p, q = np_softmax(t / temp), np_softmax(s / temp)
  return temp**2 * np.mean([np.sum(pi * (np.log(pi) - np.log(qi))) for pi, qi in zip(p, q)])


def np_aft(g, phi, rho_logits, kernel):
  def prep(x):
    x = x - x.mean(0)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)

  target = phi / (1 + np.exp(-rho_logits)) if rho_logits.ndim == 1 else phi @ rho_logits
  a, b = prep(g), prep(target)
  n = len(g)
  if kernel == "linear":
    ka = np.array([[a[i] @ a[j] for j in range(n)] for i in range(n)])
    kb = np.array([[b[i] @ b[j] for j in range(n)] for i in range(n)])
  else:
    ka = np.array([[np.exp(-np.sum((a[i] - a[j]) ** 2)) for j in range(n)] for i in range(n)])
    kb = np.array([[np.exp(-np.sum((b[i] - b[j]) ** 2)) for j in range(n)] for i in range(n)])
  return np.sqrt(np.mean((ka - kb) ** 2) + 1e-8)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.0])
def test_alignment_matches_numpy(alpha):
  zs, zt = _unit(RNG.randn(9, 5)), _unit(RNG.randn(9, 5))
  np.testing.assert_allclose(losses.alignment(zs, zt, alpha), np_alignment(zs, zt, alpha),
                             rtol=1e-5)
  assert float(losses.alignment(zs, zs, alpha)) == 0.0
  # Equal inputs: zero, with a finite (zero) gradient at alpha = 2.
  grad = jax.grad(lambda a: losses.alignment(a, jnp.asarray(zs)))(jnp.asarray(zs))
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) == 0.0


@pytest.mark.parametrize("t", [2.0, 0.5, 20.0])
def test_uniformity_matches_numpy_and_ignores_batch_order(t):
  # its own generator: the inputs (and float32's rounding of |z|) do not depend on which tests
  # ran before in this process
  rng = np.random.RandomState(0)
  z = _unit(rng.randn(11, 6))
  np.testing.assert_allclose(losses.uniformity(z, t), np_uniformity(z, t), rtol=1e-5, atol=1e-6)
  perm = rng.permutation(len(z))
  np.testing.assert_allclose(losses.uniformity(z[perm], t), losses.uniformity(z, t), rtol=1e-6)
  # All embeddings equal: every pair at distance 0, log mean exp(0) = 0 (the maximum).
  assert abs(float(losses.uniformity(np.tile(z[:1], (5, 1)), t))) < 1e-6


def test_kd_matches_numpy_zero_for_equal_logits_and_scales_with_t_squared():
  s, t = RNG.randn(7, 10) * 3, RNG.randn(7, 10) * 3
  for temp in (1.0, 4.0):
    np.testing.assert_allclose(losses.kd_kl(s, t, temp), np_kd(s, t, temp), rtol=1e-5)
  assert abs(float(losses.kd_kl(t, t, 4.0))) < 1e-6
  # T^2 scaling: at T the loss is T^2 times the plain KL of the softened distributions.
  plain = np_kd(s / 4.0, t / 4.0, 1.0)
  np.testing.assert_allclose(losses.kd_kl(s, t, 4.0), 16.0 * plain, rtol=1e-5)


def test_multi_teacher_kd():
  s = RNG.randn(6, 5)
  teachers = [RNG.randn(6, 5) * 2, RNG.randn(6, 5) * 2]
  summed = losses.multi_teacher_kd(s, teachers, 4.0, mode="sum_kl")
  np.testing.assert_allclose(summed, sum(np_kd(s, t, 4.0) for t in teachers), rtol=1e-5)
  mean_p = np.mean([np_softmax(t / 4.0) for t in teachers], axis=0)
  q = np_softmax(s / 4.0)
  want = 16.0 * np.mean(np.sum(mean_p * (np.log(mean_p) - np.log(q)), -1))
  np.testing.assert_allclose(losses.multi_teacher_kd(s, teachers, 4.0), want, rtol=1e-5)
  # One teacher: both modes are plain KD.
  for mode in ("sum_kl", "mean_probs"):
    np.testing.assert_allclose(losses.multi_teacher_kd(s, teachers[:1], 4.0, mode),
                               np_kd(s, teachers[0], 4.0), rtol=1e-5)
  with pytest.raises(ValueError, match="mean_probs"):
    losses.multi_teacher_kd(s, teachers, 4.0, mode="max")


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_aft_matches_numpy(kernel):
  g, phi = RNG.randn(8, 4), RNG.randn(8, 6)
  rho = RNG.randn(6)
  np.testing.assert_allclose(losses.aft(g, phi, rho, kernel), np_aft(g, phi, rho, kernel),
                             rtol=1e-5)
  dense = RNG.randn(6, 3)
  np.testing.assert_allclose(losses.aft(g, phi, dense, kernel), np_aft(g, phi, dense, kernel),
                             rtol=1e-5)


def test_aft_properties():
  phi = RNG.randn(10, 6)
  large = np.full(6, 30.0)  # sigmoid -> 1: rho * phi = phi
  # phi = g and rho large: the two kernels coincide, R = sqrt(1e-8).
  np.testing.assert_allclose(losses.aft(phi, phi, large), 1e-4, rtol=1e-3)
  # Features scaled per dimension by rho are matched when g = rho * phi ...
  rho = RNG.randn(6)
  g = phi / (1 + np.exp(-rho))
  assert float(losses.aft(g, phi, rho)) < 2e-4
  # ... and R ignores a pre-trained feature whose rho is ~0, even if g lacks it.
  rho_off = np.concatenate([np.full(5, 30.0), [-30.0]])
  assert float(losses.aft(phi[:, :5], phi, rho_off)) < 2e-4
  assert float(losses.aft(phi[:, :5], phi, large)) > 1e-2
  # The gradient reaches rho (it is learned).
  grad = jax.grad(lambda r: losses.aft(jnp.asarray(phi[:, :5]), jnp.asarray(phi), r))(
      jnp.zeros(6))
  assert float(jnp.abs(grad).max()) > 0
  with pytest.raises(ValueError, match="linear"):
    losses.aft(g, phi, rho, kernel="poly")


def test_feature_maps():
  g, phi = RNG.randn(8, 4), RNG.randn(8, 6)
  w, b = RNG.randn(4, 6), RNG.randn(6)
  np.testing.assert_allclose(losses.feature_kd(g, phi, w, b), np.mean((g @ w + b - phi) ** 2),
                             rtol=1e-5)
  assert float(losses.feature_kd(g, g @ w + b, w, b)) < 1e-10
  v = RNG.randn(6, 4)
  target, gc = phi @ v - (phi @ v).mean(0), g - g.mean(0)
  np.testing.assert_allclose(losses.aft_feature_map(g, phi, v), np.mean((target - gc) ** 2),
                             rtol=1e-5)


# ---------------------------------------------------------------- 1 vs 8 devices


