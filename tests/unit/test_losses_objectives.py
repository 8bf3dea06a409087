"""The added distillation objectives (logit standardisation, DKD, RKD, CRD, SRRL, factor transfer,
LogME and B-Tuning) against independent NumPy float64 implementations written from the papers'
formulas (loops over examples, pairs and triplets; no code shared with kdjax), their defining
properties, and finite gradients where distances or vectors are zero."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses


def _rng(seed=0):
  return np.random.RandomState(seed)


def _finite(tree):
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def np_softmax(z):
  e = np.exp(z - np.max(z))
  return e / np.sum(e)


def np_kl(p, q):
  return float(np.sum([pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(p, q) if pi > 0]))


# ---------------------------------------------------------------- logit standardisation


def np_standardize(z):
  """Z-score over the classes with the unbiased std and 1e-7 on the std (the reference's)."""
  z = np.asarray(z, np.float64)
  out = np.empty_like(z)
  for i, row in enumerate(z):
    mean = np.sum(row) / len(row)
    std = np.sqrt(np.sum((row - mean) ** 2) / (len(row) - 1))
    out[i] = (row - mean) / (1e-7 + std)
  return out


def np_kd(s, t, temp):
  return temp**2 * np.mean([np_kl(np_softmax(b / temp), np_softmax(a / temp))
                            for a, b in zip(s, t)])


def test_standardize_and_kd_with_it_match_numpy():
  rng = _rng(1)
  s, t = rng.randn(6, 10) * 3 + 2, rng.randn(6, 10) * 5 - 1
  np.testing.assert_allclose(losses.standardize(s), np_standardize(s), rtol=1e-5, atol=1e-6)
  z = np.asarray(losses.standardize(s))
  np.testing.assert_allclose(z.mean(-1), 0, atol=1e-6)
  np.testing.assert_allclose(z.std(-1, ddof=1), 1, rtol=1e-5)
  for temp in (1.0, 2.0):
    np.testing.assert_allclose(losses.kd_kl(s, t, temp, standardize=True),
                               np_kd(np_standardize(s), np_standardize(t), temp), rtol=1e-5)
  np.testing.assert_allclose(losses.kd_kl(s, t, 2.0), np_kd(s, t, 2.0), rtol=1e-5)  # default off
  teachers = [t, rng.randn(6, 10) * 2]
  zs, zts = np_standardize(s), [np_standardize(x) for x in teachers]
  np.testing.assert_allclose(losses.multi_teacher_kd(s, teachers, 2.0, "sum_kl", standardize=True),
                             sum(np_kd(zs, zt, 2.0) for zt in zts), rtol=1e-5)
  mean_p = np.mean([[np_softmax(r / 2.0) for r in zt] for zt in zts], axis=0)
  want = 4.0 * np.mean([np_kl(p, np_softmax(r / 2.0)) for p, r in zip(mean_p, zs)])
  np.testing.assert_allclose(losses.multi_teacher_kd(s, teachers, 2.0, standardize=True), want,
                             rtol=1e-5)


def test_standardized_kd_ignores_per_example_shift_and_scale():
  rng = _rng(2)
  s, t = rng.randn(5, 8), rng.randn(5, 8) * 4
  shift_s, shift_t = rng.randn(5, 1) * 10, rng.randn(5, 1) * 10
  scale_s, scale_t = np.exp(rng.randn(5, 1)), np.exp(rng.randn(5, 1))
  base = losses.kd_kl(s, t, 2.0, standardize=True)
  moved = losses.kd_kl(s * scale_s + shift_s, t * scale_t + shift_t, 2.0, standardize=True)
  np.testing.assert_allclose(moved, base, rtol=1e-4)
  assert abs(float(losses.kd_kl(s * scale_s + shift_s, s, 2.0, standardize=True))) < 1e-5
  # ... which plain KD does not.
  assert abs(float(losses.kd_kl(s * scale_s + shift_s, t * scale_t + shift_t, 2.0)
                   - losses.kd_kl(s, t, 2.0))) > 1e-2
  # Constant logits (std 0): zeros, finite gradient.
  flat = jnp.ones((2, 8)) * 3.0
  assert float(jnp.abs(losses.standardize(flat)).max()) == 0.0
  grad = jax.jit(jax.grad(lambda x: losses.kd_kl(x, jnp.asarray(t[:2]), 2.0, standardize=True)))(
      flat)
  assert _finite(grad)


# ---------------------------------------------------------------- DKD


DKD = jax.jit(losses.dkd, static_argnames=("standardize",))


def np_dkd(s, t, labels, temp):
  """Zhao et al. Eq. (1)-(4): binary (target vs rest) and non-target distributions, x T^2."""
  tckd, nckd = [], []
  for zs, zt, y in zip(s, t, labels):
    ps, pt = np_softmax(zs / temp), np_softmax(zt / temp)
    tckd.append(np_kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]]))
    others = [c for c in range(len(zs)) if c != y]
    nckd.append(np_kl(np_softmax(zt[others] / temp), np_softmax(zs[others] / temp)))
  return temp**2 * np.mean(tckd), temp**2 * np.mean(nckd)


def test_dkd_matches_numpy_and_decomposes_kd():
  rng = _rng(3)
  s, t = rng.randn(7, 6) * 2, rng.randn(7, 6) * 3
  y = rng.randint(0, 6, 7)
  for temp in (1.0, 4.0):
    got = DKD(s, t, y, temp)
    np.testing.assert_allclose(got, np_dkd(s, t, y, temp), rtol=1e-5)
  got = DKD(s, t, y, 2.0, standardize=True)
  np.testing.assert_allclose(got, np_dkd(np_standardize(s), np_standardize(t), y, 2.0), rtol=1e-5)
  # Per example KD = TCKD + (1 - p_t^teacher) NCKD (the paper's Eq. 4); the one-row mask picks it.
  for i in range(7):
    tckd, nckd = DKD(s, t, y, 4.0, mask=np.eye(7)[i])
    p_gt = np_softmax(t[i] / 4.0)[y[i]]
    np.testing.assert_allclose(tckd + (1 - p_gt) * nckd, np_kd(s[i:i + 1], t[i:i + 1], 4.0),
                               rtol=1e-5)
  # Equal logits: both terms vanish.
  assert max(abs(float(v)) for v in DKD(t, t, y, 4.0)) < 1e-6


def test_dkd_mask_ignores_rows_and_stays_finite():
  rng = _rng(4)
  s, t = rng.randn(8, 5), rng.randn(8, 5)
  y = rng.randint(0, 5, 8)
  mask = np.array([1, 1, 0, 1, 0, 1, 1, 0], np.float32)
  keep = mask > 0
  want = np_dkd(s[keep], t[keep], y[keep], 4.0)
  s_bad, t_bad, y_bad = s.copy(), t.copy(), y.copy()
  s_bad[~keep], t_bad[~keep], y_bad[~keep] = 1e4, -1e4, -1
  np.testing.assert_allclose(DKD(s_bad, t_bad, y_bad, 4.0, mask=mask), want, rtol=1e-5,
                             atol=1e-6)
  grad = jax.jit(jax.grad(lambda x: sum(DKD(x, jnp.asarray(t_bad), jnp.asarray(y_bad), 4.0,
                                                   mask=jnp.asarray(mask)))))(jnp.asarray(s_bad))
  assert _finite(grad) and float(jnp.abs(grad[~keep]).max()) == 0.0
  # No row kept: zero, not NaN. A teacher certain of the target (p_gt = 1 in float32): finite.
  assert [float(v) for v in DKD(s, t, y, 4.0, mask=np.zeros(8))] == [0.0, 0.0]
  sure = t.copy()
  sure[np.arange(8), y] = 500.0
  vals, grad = jax.jit(jax.value_and_grad(lambda x: sum(DKD(x, jnp.asarray(sure), y, 1.0))))(
      jnp.asarray(s))
  assert _finite((vals, grad))


# ---------------------------------------------------------------- RKD


def _np_unit_or_zero(v):
  n = np.linalg.norm(v)
  return v / n if n > 0 else np.zeros_like(v)


def np_smooth_l1(x):
  return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def np_rkd_distance(s, t):
  """Park et al. Eq. (4)-(5): psi_D = ||x_i - x_j|| / mu, mu = mean distance over distinct pairs
  (here: over the positive ones), Huber loss, averaged over all B^2 ordered pairs."""
  def psi(x):
    b = len(x)
    d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(b)] for i in range(b)])
    pos = d[d > 0]
    return d / (pos.mean() if len(pos) else 1.0)
  ds, dt = psi(s), psi(t)
  return np.mean([np_smooth_l1(a - b) for a, b in zip(ds.ravel(), dt.ravel())])


def np_rkd_angle(s, t):
  """Park et al. Eq. (6)-(7): cos of the angle at x_j between x_i and x_k, Huber loss, averaged
  over all B^3 ordered triplets (degenerate ones have cosine 0)."""
  def cos(x, i, j, k):
    return _np_unit_or_zero(x[i] - x[j]) @ _np_unit_or_zero(x[k] - x[j])
  b = len(s)
  return np.mean([np_smooth_l1(cos(s, i, j, k) - cos(t, i, j, k))
                  for i, j, k in itertools.product(range(b), repeat=3)])


def dense_angle(s, t):
  """The same loss with the [B, B, D] difference tensor in one piece (for the gradients)."""
  def ang(x):
    d = x[None, :, :] - x[:, None, :]
    sq = jnp.sum(d * d, -1, keepdims=True)
    u = jnp.where(sq > 0, d / jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return jnp.einsum("abd,acd->abc", u, u)
  diff = ang(s) - jax.lax.stop_gradient(ang(t))
  return jnp.mean(jnp.where(jnp.abs(diff) < 1, 0.5 * diff**2, jnp.abs(diff) - 0.5))


# One compiled value-and-gradient per loss, shared by the tests below (all at the same shapes).
RKD = {fn: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
       for fn in (losses.rkd_distance, losses.rkd_angle)}
NP_RKD = {losses.rkd_distance: np_rkd_distance, losses.rkd_angle: np_rkd_angle}


def _rkd_inputs(seed):
  rng = _rng(seed)  # 10 rows: more anchors than one chunk (8), and a remainder
  return rng.randn(10, 5) * 0.3, rng.randn(10, 9) * 4  # widths differ


def test_rkd_matches_numpy_and_gradients():
  s, t = _rkd_inputs(5)
  for fn, vg in RKD.items():
    value, (g_s, g_t) = vg(s, t)
    np.testing.assert_allclose(value, NP_RKD[fn](s, t), rtol=1e-5)
    assert _finite(g_s) and float(jnp.abs(g_s).max()) > 0
    assert float(jnp.abs(g_t).max()) == 0.0  # the teacher side carries no gradient
  # The chunked, rematerialised map has the gradient of the whole [B, B, D] computation.
  g_dense = jax.jit(jax.grad(dense_angle))(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(RKD[losses.rkd_angle](s, t)[1][0], g_dense, rtol=1e-4, atol=1e-7)


def test_rkd_duplicate_rows_and_zero_distances():
  s, t = _rkd_inputs(6)
  s[3] = s[1]  # duplicate student rows: a zero distance and zero difference vectors
  t[5] = t[0]
  same = np.tile(s[:1], (10, 1))  # every distance zero
  q, _ = np.linalg.qr(_rng(7).randn(5, 5))
  for fn, vg in RKD.items():
    value, grads = vg(s, t)
    np.testing.assert_allclose(value, NP_RKD[fn](s, t), rtol=1e-5)
    assert _finite(grads)
    assert _finite(vg(same, t))
    # Rotation and translation invariance; the distance term is also scale invariant.
    np.testing.assert_allclose(vg(3 * s @ q + 1, t)[0] if fn is losses.rkd_distance
                               else vg(s @ q + 1, t)[0], value, rtol=1e-4, atol=1e-7)


def test_rkd_angle_memory_stays_small():
  b, d = 128, 2048
  spec = jax.ShapeDtypeStruct((b, d), jnp.float32)
  compiled = jax.jit(jax.grad(losses.rkd_angle)).lower(spec, spec).compile()
  mem = compiled.memory_analysis()
  if mem is None:
    pytest.skip("no memory analysis on this backend")
  assert mem.temp_size_in_bytes < 40 * 2**20, mem.temp_size_in_bytes  # [B, B, D] is 128 MiB


# ---------------------------------------------------------------- CRD


def np_crd(zs, zt, mem_s, mem_t, z_s, z_t, index, negatives, temp, momentum):
  """Tian et al. Eq. (18)-(19) with the memory bank: h = exp(<v, u>/T) / Z, NCE with M = N rows
  and K negatives (prior K/M of a noise sample), both anchors; then the momentum update."""
  n, b, k = len(mem_s), len(zs), negatives.shape[1]

  def side(anchor, bank, z):
    scores = np.array([[np.exp(bank[r] @ anchor[i] / temp)
                        for r in [index[i], *negatives[i]]] for i in range(b)])
    z = z if z > 0 else scores.mean() * n
    h = scores / z
    prior = k / n
    loss = 0.0
    for i in range(b):
      loss -= np.log(h[i, 0] / (h[i, 0] + prior + 1e-7))
      loss -= sum(np.log(prior / (h[i, j] + prior + 1e-7)) for j in range(1, k + 1))
    return loss / b, z

  loss_s, z_s = side(zs, mem_t, z_s)  # the student anchor against the teacher's memory
  loss_t, z_t = side(zt, mem_s, z_t)
  new_s, new_t = mem_s.copy(), mem_t.copy()
  for i, r in enumerate(index):
    new_s[r] = _np_unit_or_zero(momentum * mem_s[r] + (1 - momentum) * zs[i])
    new_t[r] = _np_unit_or_zero(momentum * mem_t[r] + (1 - momentum) * zt[i])
  return loss_s + loss_t, new_s, new_t, z_s, z_t


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


CRD = jax.jit(losses.crd)


# N <= (K+1) D: scores through z @ bank.T; N > (K+1) D: through the gathered rows
@pytest.mark.parametrize("n,dim,k", [(40, 8, 5), (30, 3, 2)])
def test_crd_matches_numpy_over_two_steps(n, dim, k):
  rng = _rng(7)
  labels = rng.randint(0, 4, n)
  memory = losses.init_memory(jax.random.PRNGKey(0), n, dim)
  bound = 1 / np.sqrt(dim / 3)
  for side in ("student", "teacher"):
    assert memory[side].shape == (n, dim) and float(jnp.abs(memory[side]).max()) <= bound
  assert float(memory["z_student"]) == 0.0 and float(memory["z_teacher"]) == 0.0
  table = losses.class_table(labels)
  mem_s, mem_t = np.asarray(memory["student"], np.float64), np.asarray(memory["teacher"],
                                                                      np.float64)
  z_s = z_t = 0.0
  for step in range(2):
    index = rng.choice(n, 5, replace=False)
    negatives = np.asarray(losses.sample_negatives(jax.random.PRNGKey(step),
                                                   table["group"][index], table, k))
    zs, zt = _unit(rng.randn(5, dim)), _unit(rng.randn(5, dim))
    loss, memory = CRD(zs, zt, memory, index, negatives, 0.07, 0.5)
    want, mem_s, mem_t, z_s2, z_t2 = np_crd(zs, zt, mem_s, mem_t, z_s, z_t, index, negatives,
                                            0.07, 0.5)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(memory["student"], mem_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(memory["teacher"], mem_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([memory["z_student"], memory["z_teacher"]], [z_s2, z_t2], rtol=1e-5)
    if step == 1:  # set on the first call, kept on the second
      assert (z_s2, z_t2) == (z_s, z_t)
    z_s, z_t = z_s2, z_t2
  assert z_s > 0 and z_t > 0


def test_crd_gradients_and_pure_memory():
  rng = _rng(8)
  n, dim, k = 50, 8, 6
  memory = losses.init_memory(jax.random.PRNGKey(1), n, dim)
  index = jnp.arange(4)
  negatives = jnp.asarray(rng.randint(4, n, (4, k)))
  zs, zt = jnp.asarray(_unit(rng.randn(4, dim))), jnp.asarray(_unit(rng.randn(4, dim)))

  def loss_of(a, b, mem):
    return losses.crd(a, b, mem, index, negatives)[0]

  g_s, g_t, g_mem = jax.jit(jax.grad(loss_of, argnums=(0, 1, 2)))(zs, zt, memory)
  assert _finite((g_s, g_t)) and float(jnp.abs(g_s).max()) > 0 and float(jnp.abs(g_t).max()) > 0
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g_mem))

  def new_memory_sum(a, b):
    new = losses.crd(a, b, memory, index, negatives)[1]
    return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(new))

  # The new memory is a function of the inputs without a gradient path.
  g_new = jax.jit(jax.grad(new_memory_sum, argnums=(0, 1)))(zs, zt)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in g_new)


def test_class_table_and_negatives_never_from_own_group():
  rng = _rng(9)
  labels = np.concatenate([rng.randint(0, 5, 150), np.full(30, -1)])
  rng.shuffle(labels)
  table = losses.class_table(labels)
  n = len(labels)
  assert sorted(table["order"].tolist()) == list(range(n))
  groups = np.unique(labels)
  assert len(table["counts"]) == len(groups) == 6 and table["counts"].sum() == n
  for gid, value in enumerate(groups):
    block = table["order"][table["starts"][gid]:table["starts"][gid] + table["counts"][gid]]
    assert np.all(labels[block] == value) and np.all(table["group"][block] == gid)
  index = np.arange(n)
  draws = np.asarray(losses.sample_negatives(jax.random.PRNGKey(3), table["group"][index], table,
                                             400))
  assert draws.shape == (n, 400) and draws.dtype == np.int32
  assert np.all(labels[draws] != labels[index][:, None])  # 72000 draws, none of the own group
  # Uniform over the other rows: pooled over a group's rows, every other row is drawn at about
  # its expected frequency (a Poisson count within 6 standard deviations).
  for value in np.unique(labels):
    own = labels == value
    pooled = np.bincount(draws[own].ravel(), minlength=n)
    assert np.all(pooled[own] == 0)
    expected = own.sum() * 400 / (~own).sum()
    assert np.all(np.abs(pooled[~own] - expected) < 6 * np.sqrt(expected)), value
  with pytest.raises(ValueError, match="two classes"):
    losses.class_table(np.zeros(10, int))


# ---------------------------------------------------------------- SRRL, factor transfer


def test_srrl_matches_numpy():
  rng = _rng(10)
  f, w, bias = rng.randn(6, 5), rng.randn(5, 4), rng.randn(4)
  logits_t, feat_t = rng.randn(6, 4), rng.randn(6, 5)
  want_logit = np.mean([(f[i] @ w[:, c] + bias[c] - logits_t[i, c]) ** 2
                        for i in range(6) for c in range(4)])
  want_feat = np.mean([(f[i, j] - feat_t[i, j]) ** 2 for i in range(6) for j in range(5)])
  np.testing.assert_allclose(losses.srrl(f, w, bias, logits_t, feat_t), [want_logit, want_feat],
                             rtol=1e-5)
  np.testing.assert_allclose(losses.srrl(f, w, None, logits_t, feat_t)[0],
                             np.mean((f @ w - logits_t) ** 2), rtol=1e-5)
  grads = jax.jit(jax.grad(lambda *a: sum(losses.srrl(*a)), argnums=(0, 1, 2, 3, 4)))(
      *map(jnp.asarray, (f, w, bias, logits_t, feat_t)))
  assert float(jnp.abs(grads[0]).max()) > 0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads[1:])  # the teacher is frozen


def test_ft_loss_matches_numpy_and_zero_rows():
  rng = _rng(11)
  p, t = rng.randn(5, 7), rng.randn(5, 7) * 3
  want = np.mean([np.sum(np.abs(_np_unit_or_zero(a) - _np_unit_or_zero(b))) for a, b in zip(p, t)])
  np.testing.assert_allclose(losses.ft_loss(p, t), want, rtol=1e-5)
  assert float(losses.ft_loss(2.5 * t, t)) < 1e-6  # only directions count
  p[2] = 0.0
  want = np.mean([np.sum(np.abs(_np_unit_or_zero(a) - _np_unit_or_zero(b))) for a, b in zip(p, t)])
  np.testing.assert_allclose(losses.ft_loss(p, t), want, rtol=1e-5)
  g_p, g_t = jax.jit(jax.grad(losses.ft_loss, argnums=(0, 1)))(jnp.asarray(p), jnp.asarray(t))
  assert _finite(g_p) and float(jnp.abs(g_t).max()) == 0.0


# ---------------------------------------------------------------- LogME, B-Tuning


def np_logme_algorithm1(f, labels, num_classes, iters=500):
  """LogME, Algorithm 1 of You et al. (ICML 2021) as written: per class, alternate
  m = beta A^-1 F^T y with A = alpha I + beta F^T F, gamma = sum beta s_i / (alpha + beta s_i),
  alpha = gamma / m^T m, beta = (n - gamma) / ||F m - y||^2 to convergence; the evidence
  L = n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y||^2 - alpha/2 m^T m
      - 1/2 log |A|, divided by n, averaged over the classes."""
  n, d = f.shape
  eig = np.linalg.eigvalsh(f.T @ f)
  evidences, ms, alphas, betas = [], [], [], []
  for c in range(num_classes):
    y = (labels == c).astype(np.float64)
    alpha, beta = 1.0, 1.0
    for _ in range(iters):
      a_mat = alpha * np.eye(d) + beta * f.T @ f
      m = beta * np.linalg.solve(a_mat, f.T @ y)
      gamma = np.sum(beta * eig / (alpha + beta * eig))
      new_alpha = gamma / (m @ m)
      new_beta = (n - gamma) / np.sum((f @ m - y) ** 2)
      done = abs(new_alpha - alpha) <= 1e-13 * alpha and abs(new_beta - beta) <= 1e-13 * beta
      alpha, beta = new_alpha, new_beta
      if done:
        break
    a_mat = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a_mat, f.T @ y)
    evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * (m @ m)
                - 0.5 * np.linalg.slogdet(a_mat)[1])
    evidences.append(evidence / n)
    ms.append(m)
    alphas.append(alpha)
    betas.append(beta)
  return np.mean(evidences), np.array(ms), np.array(alphas), np.array(betas)


def _logme_data(n, d, c, seed):
  rng = _rng(seed)
  labels = np.arange(n) % c
  rng.shuffle(labels)
  centres = rng.randn(c, d)
  return centres[labels] + rng.randn(n, d), labels


def test_logme_matches_algorithm1_at_convergence():
  f, labels = _logme_data(120, 8, 3, 12)
  score, mu, alpha, beta = np_logme_algorithm1(f, labels, 3)
  fit = losses.logme_fit(f, labels, 3, max_iter=1000, tol=1e-14, eps=0.0)
  np.testing.assert_allclose(fit["score"], score, rtol=1e-9)
  np.testing.assert_allclose(fit["mu"], mu, rtol=1e-7, atol=1e-10)
  np.testing.assert_allclose(fit["alpha"], alpha, rtol=1e-7)
  np.testing.assert_allclose(fit["beta"], beta, rtol=1e-7)
  # The reference's default (11 steps, tolerance 1e-3, eps 1e-5) is close to it.
  default_score, default_mu = losses.logme(f, labels, 3)
  np.testing.assert_allclose(default_score, score, rtol=1e-3)
  assert default_mu.shape == (3, 8)


def test_logme_closed_form_conditions():
  f, labels = _logme_data(90, 6, 4, 13)
  n = len(f)
  eig = np.linalg.eigvalsh(f.T @ f)
  for kwargs in ({}, {"max_iter": 1000, "tol": 1e-14}):
    fit = losses.logme_fit(f, labels, 4, **kwargs)
    for c in range(4):
      y = (labels == c).astype(np.float64)
      # mu is the ridge solution at the t it was computed with ...
      ridge = np.linalg.solve(f.T @ f + fit["lam"][c] * np.eye(6), f.T @ y)
      np.testing.assert_allclose(fit["mu"][c], ridge, rtol=1e-8, atol=1e-12)
      if kwargs:  # ... and at the fixed point alpha, beta reproduce themselves
        a, b = fit["alpha"][c], fit["beta"][c]
        m = np.linalg.solve(f.T @ f + a / b * np.eye(6), f.T @ y)
        gamma = np.sum(eig / (eig + a / b))
        np.testing.assert_allclose(a, gamma / (m @ m + 1e-5), rtol=1e-8)
        np.testing.assert_allclose(b, (n - gamma) / (np.sum((f @ m - y) ** 2) + 1e-5), rtol=1e-8)
        np.testing.assert_allclose(fit["lam"][c], a / b, rtol=1e-10)
  with pytest.raises(ValueError, match="labels"):
    losses.logme_fit(f, labels - 1, 4)


def test_logme_fewer_rows_than_dims_keeps_the_reference_evidence():
  """n <= D: the reference's evidence sums log(alpha + beta sigma) over min(n, D) singular values,
  so it exceeds the papers' (all D eigenvalues of A) by (D - n) / 2 log alpha / n."""
  f, labels = _logme_data(10, 16, 2, 14)
  score, mu, alpha, _ = np_logme_algorithm1(f, labels, 2)
  fit = losses.logme_fit(f, labels, 2, max_iter=1000, tol=1e-14, eps=0.0)
  np.testing.assert_allclose(fit["alpha"], alpha, rtol=1e-6)
  np.testing.assert_allclose(fit["mu"], mu, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(fit["score"],
                             score + np.mean((16 - 10) / 2 * np.log(alpha) / 10), rtol=1e-7)


def test_btuning_matches_numpy():
  rng = _rng(15)
  scores = np.array([-0.9, -1.1, -0.95])
  w = np.exp(scores / 0.1) / np.sum(np.exp(scores / 0.1))
  np.testing.assert_allclose(losses.btuning_weights(scores), w, rtol=1e-5)
  np.testing.assert_allclose(losses.btuning_weights(scores, 1.0),
                             np.exp(scores) / np.exp(scores).sum(), rtol=1e-5)
  g, mu_s = rng.randn(6, 4), rng.randn(3, 4)
  phis = [rng.randn(6, 5), rng.randn(6, 7), rng.randn(6, 2)]
  mus = [rng.randn(3, 5), rng.randn(3, 7), rng.randn(3, 2)]
  want = np.mean([(g[i] @ mu_s[c] - sum(w[j] * phis[j][i] @ mus[j][c] for j in range(3))) ** 2
                  for i in range(6) for c in range(3)])
  np.testing.assert_allclose(losses.btuning(g, phis, mu_s, mus, w), want, rtol=1e-5)
  grads = jax.jit(jax.grad(losses.btuning, argnums=(0, 1, 2)))(
      jnp.asarray(g), [jnp.asarray(p) for p in phis], jnp.asarray(mu_s), mus, jnp.asarray(w))
  assert float(jnp.abs(grads[0]).max()) > 0
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(grads[1:]))
  with pytest.raises(ValueError, match="mu"):
    losses.btuning(g, phis, mu_s, mus[:2], w)
