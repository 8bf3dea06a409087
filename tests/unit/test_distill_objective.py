"""The objective in the train step (kdjax/distill/objective.py, kdjax/steps.py): every method's
preset validates and trains a finite step; the step's loss is the weighted, warmed-up sum of
its terms; CRD's memory bank changes exactly at the batch's rows; SRRL reads the teacher's own
head. Tiny dense models, so each jitted step compiles in a moment."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import configlib, steps, validate
from kdjax.distill import objective, teacher_views

B, C, S = 8, 5, 4  # batch, classes, image side
N_TRAIN = 24


class TinyStudent(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    h = nn.relu(nn.Dense(6, name="body")(x.reshape(x.shape[0], -1)))
    logits = nn.Dense(C, name="head")(h)
    return logits, {"pre_logits": h, "logits": logits}


class TinyTeacher(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    features = jnp.tanh(nn.Dense(7, name="body")(x.reshape(x.shape[0], -1)))
    return {"features": features, "logits": nn.Dense(C, name="classifier")(features)}


def _teacher():
  module = TinyTeacher()
  variables = module.init(jax.random.key(5), jnp.zeros((1, S, S, 3)))
  view = teacher_views.TeacherView(
      name="tiny", apply=lambda v, x: module.apply(v, x), image_size=(S, S), rescale=1 / 255,
      mean=(0.5,) * 3, std=(0.25,) * 3, num_features=7, num_logits=C)
  return view, variables


def _config(method):
  c = configlib.with_method(configlib.base(), method)
  c.teacher.models = "tiny"
  c.total_steps = 10
  c.loss.crd_negatives = 16
  c.loss.proj_dim = 4
  return c


def _step(method, **loss_overrides):
  """One jitted train step of `method`: (state before, state after, metrics, batch, distiller)."""
  c = _config(method)
  for k, v in loss_overrides.items():
    c.loss[k] = v
  view, tvars = _teacher()
  labels = np.arange(N_TRAIN) % C
  distiller = objective.Distiller(c.loss, [view], C, 6, c.data.mean, c.data.std,
                                  train_labels=labels,
                                  teacher_heads=[objective.linear_head(tvars, C)])
  tx = optax.sgd(0.1)
  state = steps.create_train_state(TinyStudent(), tx, (S, S, 3), jax.random.key(0),
                                   distiller=distiller)
  if "btuning" in distiller.weights:  # constants as the fit would leave them
    rng = np.random.RandomState(2)
    state = state.replace(memory={"btuning": {
        "mu_student": jnp.asarray(rng.randn(C, 6), jnp.float32),
        "mu_teachers": [jnp.asarray(rng.randn(C, 7), jnp.float32)],
        "weights": jnp.ones((1,), jnp.float32)}})
  rng = np.random.RandomState(1)
  index = rng.permutation(N_TRAIN)[:B].astype(np.int32)
  batch = {"image": jnp.asarray(rng.randn(B, S, S, 3), jnp.float32),
           "label": jnp.asarray(labels[index], jnp.int32), "index": jnp.asarray(index)}
  warmup = {"dkd": 4} if method == "dkd" else None
  step = jax.jit(steps.make_train_step(TinyStudent(), tx, c.loss, C, distiller,
                                       warmup_steps=warmup))
  after, metrics = step(state, batch, jax.random.key(1), {}, [tvars])
  return state, after, jax.device_get(metrics), batch, distiller


@pytest.mark.parametrize("method", sorted(configlib.METHODS))
def test_every_method_validates_and_trains_a_finite_step(method):
  c = _config(method)
  validate.check(c)
  _, after, metrics, _, distiller = _step(method)
  assert np.isfinite(metrics["loss"]) and metrics[steps.STATE_FINITE] == 1.0
  for term in distiller.weights:
    assert term in metrics, (method, term)
  preset, fresh = configlib.METHODS[method], configlib.with_method(configlib.base(), method)
  for key, value in preset.items():
    assert configlib.get(fresh.loss, key) == value
  others = set(objective.TERMS) - {"ce"} - {k[:-len("_weight")] for k in preset
                                            if k.endswith("_weight")}
  assert all(fresh.loss[f"{t}_weight"] == 0 for t in others), method


def test_loss_is_the_weighted_sum_of_terms_with_the_warm_up():
  """DKD's weight ramps linearly: at step 0 of a 4-step warm-up its factor is 1/4."""
  _, _, m, _, distiller = _step("dkd")
  w = distiller.weights
  expected = w["ce"] * m["ce"] + 0.25 * w["dkd"] * m["dkd"]
  np.testing.assert_allclose(m["loss"], expected, rtol=1e-6)
  np.testing.assert_allclose(m["dkd"], 1.0 * m["dkd_tckd"] + 8.0 * m["dkd_nckd"], rtol=1e-6)
  assert steps.warmup_factor(jnp.int32(7), 4) == 1.0 and steps.warmup_factor(0, 0) == 1.0


def test_crd_memory_changes_only_at_the_batch_rows():
  before, after, m, batch, _ = _step("crd")
  index = np.asarray(batch["index"])
  rest = np.setdiff1d(np.arange(N_TRAIN), index)
  for side in ("student", "teacher"):
    old, new = np.asarray(before.memory["crd"][side]), np.asarray(after.memory["crd"][side])
    np.testing.assert_array_equal(new[rest], old[rest])
    assert not np.allclose(new[index], old[index])
    np.testing.assert_allclose(np.linalg.norm(new[index], axis=-1), 1.0, rtol=1e-5)
  assert float(before.memory["crd"]["z_student"]) == 0  # unset until the first step
  assert float(after.memory["crd"]["z_student"]) > 0
  assert np.isfinite(m["crd"]) and m["crd"] > 0


def test_srrl_reads_the_teachers_own_linear_head():
  _, tvars = _teacher()
  head = objective.linear_head(tvars, C)
  np.testing.assert_array_equal(head["kernel"], tvars["params"]["classifier"]["kernel"])
  assert objective.linear_head(tvars, C + 1) is None  # a head over other classes is not the task's
  student_vars = TinyStudent().init(jax.random.key(0), jnp.zeros((1, S, S, 3)))
  assert objective.linear_head(student_vars, C)["bias"].shape == (C,)  # a kdjax run's "head"


def test_ft_translator_starts_at_its_bias_and_trains():
  """Paper B's FT map starts with a zero last kernel (torch-initialised bias), so its first
  prediction is the bias, and the first step moves the kernel off zero."""
  before, after, _, _, _ = _step("ft")
  assert not np.any(np.asarray(before.aux["ft"]["fc3"]["Dense_0"]["kernel"]))
  assert np.any(np.asarray(before.aux["ft"]["fc3"]["Dense_0"]["bias"]))
  assert np.any(np.asarray(after.aux["ft"]["fc3"]["Dense_0"]["kernel"]))
