"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020, arXiv 1910.10699)
as paper A (Farhat & Chen, arXiv 2404.03263) runs it: sfarhat/dapt kd_losses/crd.py (modified
from HobbitLong/RepDistiller's crd/), functional, with the memory bank as explicit arrays.

Memory (ContrastMemory, crd.py:69-122): one bank per side, [N, D] (N = training rows), initialised
uniform in +-1/sqrt(D/3) (crd.py:78-80). For a batch, with the positive (the example's own row,
dataset mode 'exact': utils/datasets.py:124-134) first and K negatives after it:
  out_s = exp(<memory_teacher[rows], z_s> / T)   student anchor, teacher memory (crd.py:93-97)
  out_t = exp(<memory_student[rows], z_t> / T)   teacher anchor, student memory (crd.py:87-91)
each divided by its constant Z, set once from the first batch to mean(out) * N and then fixed
(crd.py:99-106). The loss (ContrastLoss, crd.py:43-67, the NCE of the paper's Eq. 18) with
m = K / N and eps = 1e-7, for each side:
  -(sum_b log(x_b0 / (x_b0 + m + eps)) + sum_{b, k>0} log(m / (x_bk + m + eps))) / B
and CRD = loss_s + loss_t (crd.py:37-39). Afterwards the batch's rows of each bank become
normalize(momentum * row + (1 - momentum) * z) with the (stop-gradient) embeddings of that side
(crd.py:108-120; F.normalize, eps 1e-12). The memory rows never carry a gradient (.detach(),
crd.py:88, 94). Where the reference departs from the paper's text: the negatives are rows of other
classes (not any other sample), and Z is estimated once, from the first batch, then frozen.

Negatives: the reference's dataset draws, per example, K rows of OTHER classes with
np.random.choice, WITHOUT replacement unless K exceeds their number (utils/datasets.py:132-133).
`sample_negatives` draws them uniformly WITH replacement (a jit-able gather; on CIFAR-100, N =
50000 and K = 4096, about 4% of a row's draws repeat an earlier one of its draws). Rows labelled
-1 (unlabelled) form one more group: their negatives are the labelled rows.

z_s and z_t are the already projected, L2-normalised embeddings (paper A's Embed ends in
F.normalize: models/projector.py; its default projector 'mocov2' is Linear-ReLU-Linear to 128,
distill.py:329, built elsewhere). Z is "not set yet" while the stored constant is 0.

CRD_DEFAULTS: paper A's distill.py:311-320 (feat_dim 128, nce_k 4096, nce_t 0.07, nce_m 0.5, mode
'exact') and its loss weights for --distill crd, distill.py:395-399 (lambd1 CE 1, lambd2 CRD 1,
lambd3 KD 1 at kd_T 4 from distill.py:314, lambd4 SRRL 0), overriding the --lambd2 default 0.8
(distill.py:338). The batch loss is lambd1 * CE + lambd2 * CRD + lambd3 * KD (distill.py:222).
"""

import jax
import jax.numpy as jnp
import numpy as np

CRD_DEFAULTS = {"feat_dim": 128, "nce_k": 4096, "temperature": 0.07, "momentum": 0.5,
                "ce_weight": 1.0, "crd_weight": 1.0, "kd_weight": 1.0, "kd_temperature": 4.0}
EPS = 1e-7  # ContrastLoss
NORMALIZE_EPS = 1e-12  # F.normalize in the memory update


def init_memory(key: jax.Array, n_data: int, dim: int) -> dict:
  """Both banks uniform in +-1/sqrt(dim/3), float32 [n_data, dim]; Z constants 0 (not set)."""
  stdv = 1.0 / np.sqrt(dim / 3.0)
  k_s, k_t = jax.random.split(key)
  bank = lambda k: jax.random.uniform(k, (n_data, dim), jnp.float32, -stdv, stdv)
  return {"student": bank(k_s), "teacher": bank(k_t), "z_student": jnp.float32(0.0),
          "z_teacher": jnp.float32(0.0)}


def class_table(labels: np.ndarray) -> dict:
  """The rows grouped by label (host-side, once per dataset), for `sample_negatives`.

  order [N]: row indices sorted by group; starts [G], counts [G]: each group's block in order;
  group [N]: each row's group id. Groups are the distinct labels in increasing order, -1
  (unlabelled) included. Raises if there is a single group (no negatives to draw).
  """
  labels = np.asarray(labels).reshape(-1)
  values, group = np.unique(labels, return_inverse=True)
  if len(values) < 2:
    raise ValueError(f"CRD needs rows of at least two classes to draw negatives from; the labels "
                     f"hold only {values.tolist()}")
  counts = np.bincount(group, minlength=len(values))
  return {"order": np.argsort(group, kind="stable").astype(np.int32),
          "starts": (np.cumsum(counts) - counts).astype(np.int32),
          "counts": counts.astype(np.int32), "group": group.astype(np.int32)}


def sample_negatives(key: jax.Array, group_of_batch: jax.Array, table: dict, k: int) -> jax.Array:
  """int32 [B, k] row indices, uniform with replacement over the rows of other groups.

  group_of_batch [B]: table["group"][index]; table: class_table's arrays (numpy or jax).
  A draw r in [0, N - count) is the r-th row of `order` with the own group's block skipped.
  """
  order = jnp.asarray(table["order"])
  g = jnp.asarray(group_of_batch)
  count = jnp.asarray(table["counts"])[g][:, None]
  start = jnp.asarray(table["starts"])[g][:, None]
  r = jax.random.randint(key, (g.shape[0], k), 0, order.shape[0] - count, dtype=jnp.int32)
  return order[jnp.where(r < start, r, r + count)]


def _scores(bank, anchor, rows):
  """<bank[rows[b, j]], anchor[b]> for rows [B, K+1]: by the gather of the rows' vectors, or,
  where the bank is smaller than the gathered block (N < (K+1) * D), through anchor @ bank.T."""
  n, d = bank.shape
  if n <= rows.shape[1] * d:
    return jnp.take_along_axis(anchor @ bank.T, rows, axis=1)
  return jnp.einsum("bkd,bd->bk", bank[rows], anchor)


def _contrast_loss(log_x, n_data):
  """ContrastLoss from log x [B, K+1] (positive first): x = exp(log_x), m = K / N."""
  b, k1 = log_x.shape
  m = (k1 - 1) / float(n_data)
  x = jnp.exp(log_x)
  log_pos = log_x[:, 0] - jnp.log(x[:, 0] + m + EPS)
  log_neg = jnp.log(m) - jnp.log(x[:, 1:] + m + EPS)
  return -(jnp.sum(log_pos) + jnp.sum(log_neg)) / b


def _update(bank, index, z, momentum):
  rows = bank[index] * momentum + z * (1.0 - momentum)
  norm = jnp.sqrt(jnp.sum(jnp.square(rows), axis=-1, keepdims=True))
  return bank.at[index].set(rows / jnp.maximum(norm, NORMALIZE_EPS))


def crd(z_s: jax.Array, z_t: jax.Array, memory: dict, index: jax.Array, negatives: jax.Array,
        temperature: float = 0.07, momentum: float = 0.5) -> tuple[jax.Array, dict]:
  """(CRD loss, new memory) for L2-normalised embeddings z_s, z_t [B, D] of the batch's rows
  `index` [B] and their negatives [B, K] (rows of the memory banks)."""
  z_s = z_s.astype(jnp.float32)
  z_t = z_t.astype(jnp.float32)
  n_data = memory["student"].shape[0]
  rows = jnp.concatenate([index[:, None], negatives], axis=1).astype(jnp.int32)
  bank_s = jax.lax.stop_gradient(memory["student"])
  bank_t = jax.lax.stop_gradient(memory["teacher"])
  logit_s = _scores(bank_t, z_s, rows) / temperature  # student anchor, teacher memory
  logit_t = _scores(bank_s, z_t, rows) / temperature  # teacher anchor, student memory

  def z_const(stored, logits):
    first = jax.lax.stop_gradient(jnp.mean(jnp.exp(logits)) * n_data)
    return jnp.where(stored > 0, stored, first).astype(jnp.float32)

  zc_s = z_const(memory["z_student"], logit_s)
  zc_t = z_const(memory["z_teacher"], logit_t)
  loss = (_contrast_loss(logit_s - jnp.log(zc_s), n_data)
          + _contrast_loss(logit_t - jnp.log(zc_t), n_data))
  new_memory = {
      "student": _update(bank_s, index, jax.lax.stop_gradient(z_s), momentum),
      "teacher": _update(bank_t, index, jax.lax.stop_gradient(z_t), momentum),
      "z_student": jax.lax.stop_gradient(zc_s), "z_teacher": jax.lax.stop_gradient(zc_t)}
  return loss, new_memory
