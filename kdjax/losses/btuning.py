"""B-Tuning (You, Liu, Wang, Long & Jordan, "Ranking and Tuning Pre-trained Model Hubs", JMLR 2022,
arXiv 2110.10545) with LogME (You, Liu, Wang & Long, ICML 2021, arXiv 2102.11005), as paper B's
baseline (Qiu et al., arXiv 2406.07337) computes them: amazon-science/adaptive-feature-transfer,
prior.py:248-270 (BTunePrior), prior.py:381-392 (get_btune_prior) and LogME.py:101-161 (a copy of
thuml/LogME's LogME.py; `_fit = _fit_fixed_point`, the JMLR fixed-point algorithm).

LogME (host side, NumPy float64), per class c with the one-hot target y_c [n]: Bayesian linear
regression y_c ~ N(F m, 1/beta), m ~ N(0, 1/alpha); alpha and beta maximise the evidence by the
fixed-point iteration, from alpha = beta = 1 with t = alpha / beta, through the SVD of F
(F = U S V^T, x = U^T y_c, sigma = S^2):
  gamma = sum sigma / (sigma + t),  m2 = sum sigma x^2 / (t + sigma)^2,
  res2 = sum x^2 / (1 + sigma / t)^2 + (|y_c|^2 - |x|^2),
  alpha = gamma / (m2 + 1e-5),  beta = (n - gamma) / (res2 + 1e-5),
at most 11 times, stopping when |alpha / beta - t| / t <= 1e-3 (LogME.py:127-144); the evidence
  L_c / n = (D/2 log alpha + n/2 log beta - 1/2 sum log(alpha + beta sigma) - beta/2 res2
             - alpha/2 m2 - n/2 log 2 pi) / n
with the last alpha, beta and the m2, res2 of the last iteration's t (LogME.py:145-151), and the
posterior mean mu_c = V S x / (t + sigma), i.e. the ridge solution (F^T F + t I)^-1 F^T y_c
(LogME.py:152-153). Score = mean_c L_c / n.

As the reference, for n > D the SVD comes from F^T F (singular values <= 1e-10 dropped,
LogME.py:48-58) and for n <= D from F itself (min(n, D) values). Where that leaves k < D values
(n < D, or a rank-deficient F) the reference's evidence departs from the papers' formula, whose
log|A| runs over all D eigenvalues of A = alpha I + beta F^T F: it lacks -(D - k)/2 log alpha.
The reference's value is kept (paper B's weights come from it); the ICML version in the same file
(LogME.py:8-39, each_evidence) uses the full spectrum, and another stopping rule.

B-Tuning (prior.py:261-270): the teachers' LogME scores give weights softmax(scores / 0.1)
(prior.py:258-259). The script that stores the scores and 'logme_weights' (README.md:83-91,
logme.py) is not in the repository; the LogME posterior means (`ms`, LogME.py:152-158, shape
[C, D] as prior.py:254 expects) are taken to be those weights. The student's features g [B, d_g]
are projected by the LogME mu of the downstream model's own (initial) features and regressed,
MSE, onto the weighted sum of the teachers' features projected by their LogME mu:
  mean((g mu_s^T - sum_i w_i phi_i mu_i^T)^2),   target and mu's constant.
BTUNING_DEFAULTS: temperature 0.1 (prior.py:259; also thuml/LogME b_tuning.py:74); the loss
weight is paper B's prior precision (--prec); thuml's b_tuning.py:76 uses a tradeoff of 100.
"""

import jax
import jax.numpy as jnp
import numpy as np

BTUNING_DEFAULTS = {"temperature": 0.1, "thuml_tradeoff": 100.0}
LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3
LOGME_EPS = 1e-5


def _spectrum(f, y):
  """(singular values [k, 1], x = U^T y [k, C], V^T [k, D]), the reference's two SVD routes."""
  n, d = f.shape
  if n > d:
    eigval, v = np.linalg.eigh(f.T @ f)
    s = np.sqrt(np.clip(eigval, 0.0, None))
    keep = s > 1e-10
    s, vh = s[keep], v[:, keep].T
    x = (vh @ (f.T @ y)) / s[:, None]  # U = F V S^-1 without forming the [n, k] matrix
  else:
    u, s, vh = np.linalg.svd(f, full_matrices=False)
    x = u.T @ y
  return s[:, None], x, vh


def logme_fit(features, labels, num_classes: int, max_iter: int = LOGME_MAX_ITER,
              tol: float = LOGME_TOL, eps: float = LOGME_EPS) -> dict:
  """LogME of features [n, D] for integer labels [n] in [0, num_classes), float64.

  Returns {"score": float, "evidence": [C] (per class, / n), "alpha": [C], "beta": [C],
  "lam": [C] (the ridge t of mu), "mu": [C, D]}. max_iter, tol, eps: the reference's 11, 1e-3
  and 1e-5."""
  f = np.asarray(features, np.float64)
  y = np.asarray(labels).reshape(-1)
  n, d = f.shape
  if y.shape[0] != n:
    raise ValueError(f"LogME: {n} feature rows but {y.shape[0]} labels")
  if n and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"LogME: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}] "
                     "(leave unlabelled rows out)")
  onehot = (y[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
  s, x, vh = _spectrum(f, onehot)
  sigma = np.square(s)  # [k, 1], against [k, C]
  x2 = np.square(x)
  res_x2 = np.sum(np.square(onehot), axis=0) - np.sum(x2, axis=0)
  alpha = np.ones(num_classes)
  beta = np.ones(num_classes)
  lam = np.ones(num_classes)
  m2 = np.zeros(num_classes)
  res2 = np.zeros(num_classes)
  active = np.ones(num_classes, bool)
  for _ in range(max_iter):
    t = alpha / beta
    gamma = np.sum(sigma / (sigma + t), axis=0)
    m2_new = np.sum(sigma * x2 / np.square(t + sigma), axis=0)
    res2_new = np.sum(x2 / np.square(1.0 + sigma / t), axis=0) + res_x2
    alpha_new = gamma / (m2_new + eps)
    beta_new = (n - gamma) / (res2_new + eps)
    converged = np.abs(alpha_new / beta_new - t) / t <= tol
    for old, new in ((alpha, alpha_new), (beta, beta_new), (lam, t), (m2, m2_new),
                     (res2, res2_new)):
      old[active] = new[active]
    active &= ~converged
    if not active.any():
      break
  evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
              - 0.5 * np.sum(np.log(alpha + beta * sigma), axis=0)
              - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi)) / n
  mu = (vh.T @ (s * x / (lam + sigma))).T
  return {"score": float(np.mean(evidence)), "evidence": evidence, "alpha": alpha, "beta": beta,
          "lam": lam, "mu": mu}


def logme(features, labels, num_classes: int) -> tuple[float, np.ndarray]:
  """(LogME score, mu [C, D] float64): the mean per-class evidence / n and the posterior mean
  weights, as the reference's LogME().fit (its `ms`)."""
  fit = logme_fit(features, labels, num_classes)
  return fit["score"], fit["mu"]


def btuning_weights(scores, temperature: float = 0.1) -> jax.Array:
  """softmax(scores / temperature) over the teachers' LogME scores, float32."""
  return jax.nn.softmax(jnp.asarray(scores, jnp.float32) / temperature)


def btuning(g: jax.Array, phis, mu_student: jax.Array, mus, weights: jax.Array) -> jax.Array:
  """mean((g mu_student^T - sum_i w_i phi_i mu_i^T)^2): g [B, d_g], phis [B, d_i] per teacher,
  mu_student [C, d_g], mus [C, d_i], weights [n_teachers]. The target and the mu's are constants
  (stop_gradient), as the reference's buffers and no_grad target."""
  if len(phis) != len(mus):
    raise ValueError(f"B-Tuning: {len(phis)} teachers' features but {len(mus)} LogME mu's")
  y = g.astype(jnp.float32) @ jax.lax.stop_gradient(jnp.asarray(mu_student, jnp.float32)).T
  w = jnp.asarray(weights, jnp.float32)
  target = sum(w[i] * (phi.astype(jnp.float32) @ jnp.asarray(mu, jnp.float32).T)
               for i, (phi, mu) in enumerate(zip(phis, mus)))
  return jnp.mean(jnp.square(y - jax.lax.stop_gradient(target)))
