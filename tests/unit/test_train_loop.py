"""kdjax.train.loop.Loop with a fake step (no model, no JAX program): the cadence of logs,
evaluations and checkpoints, the finite check before every save, resumption, and stopping."""

import numpy as np
import pytest

from kdjax import errors
from kdjax.steps import STATE_FINITE
from kdjax.train import loop


class Recorder:
  """The hooks: what was logged, evaluated and saved, in order."""

  def __init__(self):
    self.events = []

  def log(self, step, means):
    self.events.append(("log", step, means))

  def evaluate(self, step, state):
    self.events.append(("eval", step, state))
    return {"test/accuracy": state / 100}

  def save(self, step, state):
    self.events.append(("save", step, state))

  def of(self, kind):
    return [e[1:] for e in self.events if e[0] == kind]


def fake_step(losses):
  """state -> state + 1, with the loss of that step from `losses` (1-based)."""
  def step_fn(state, step):
    return state + 1, {"loss": np.float32(losses[step - 1]), "ce": np.float32(1.0),
                       STATE_FINITE: np.float32(1.0)}
  return step_fn


def make(total=10, start=0, **kw):
  args = dict(log_every=3, eval_every=4, checkpoint_every=5, ckpt_dir="CKPT",
              last_saved=start or None, terms=("ce", "kd"))
  args.update(kw)
  return loop.Loop(total, start, **args)


def run(lp, rec, losses, state=0, **kw):
  return lp.run(state, fake_step(losses), log=rec.log, evaluate=rec.evaluate, save=rec.save, **kw)


def test_cadence_and_means():
  rec = Recorder()
  losses = np.arange(1, 11, dtype=np.float32)
  state, final = run(make(), rec, losses)
  assert state == 10 and final == {"test/accuracy": 0.1}
  assert [s for s, _ in rec.of("log")] == [3, 6, 9, 10]
  # each log holds the mean over the steps since the previous one, without STATE_FINITE
  assert [m["loss"] for _, m in rec.of("log")] == [2.0, 5.0, 8.0, 10.0]
  assert all(set(m) == {"loss", "ce"} for _, m in rec.of("log"))
  assert [s for s, _ in rec.of("eval")] == [4, 8, 10]
  assert rec.of("save") == [(5, 5), (10, 10)]


def test_a_resumed_loop_runs_only_the_remaining_steps():
  rec = Recorder()
  state, _ = run(make(start=5), rec, np.ones(10), state=5)
  assert state == 10
  assert [s for s, _ in rec.of("log")] == [6, 9, 10]
  assert rec.of("save") == [(10, 10)]


def test_a_non_finite_term_stops_before_the_next_save_and_names_step_and_term():
  rec = Recorder()
  losses = np.ones(10, np.float32)
  losses[6] = np.nan  # step 7

  def step_fn(state, step):
    out = fake_step(losses)(state, step)
    out[1]["kd"] = out[1]["loss"]
    return out

  lp = make()
  with pytest.raises(errors.NonFiniteLoss, match=r"step 7: .*kd = nan.*step 5 in CKPT"):
    lp.run(0, step_fn, log=rec.log, evaluate=rec.evaluate, save=rec.save)
  assert rec.of("save") == [(5, 5)]  # step 7 is never saved
  assert [s for s, _ in rec.of("log")] == [3, 6]  # the log at step 9 found it


def test_non_finite_parameters_are_caught_even_with_finite_losses():
  rec = Recorder()

  def step_fn(state, step):
    return state + 1, {"loss": np.float32(1.0),
                       STATE_FINITE: np.float32(0.0 if step == 2 else 1.0)}

  with pytest.raises(errors.NonFiniteLoss, match="non-finite parameters after step 2"):
    make(log_every=100).run(0, step_fn, log=rec.log, evaluate=rec.evaluate, save=rec.save)
  assert rec.of("save") == []  # the finite check runs before the first save (step 5)


def test_a_stop_request_saves_the_current_step_and_raises_preempted():
  rec, waited = Recorder(), []
  with pytest.raises(errors.Preempted, match="saved a checkpoint at step 7 in CKPT"):
    run(make(), rec, np.ones(10), should_stop=lambda step: step == 7,
        wait=lambda: waited.append(True))
  assert rec.of("save") == [(5, 5), (7, 7)] and waited == [True]


def test_a_stop_at_a_checkpoint_step_saves_once():
  rec = Recorder()
  with pytest.raises(errors.Preempted):
    run(make(), rec, np.ones(10), should_stop=lambda step: step == 5)
  assert rec.of("save") == [(5, 5)]


def test_a_stop_requested_during_set_up_saves_nothing():
  rec = Recorder()
  with pytest.raises(errors.Preempted, match="before training step 4: nothing new to save "
                                             r"\(checkpoint step 3 in CKPT\)"):
    run(make(start=3), rec, np.ones(10), state=3, stop_requested=lambda: True)
  assert rec.events == []


def test_a_finished_run_does_nothing():
  rec = Recorder()
  state, final = run(make(start=10), rec, np.ones(10), state=10)
  assert (state, final, rec.events) == (10, {}, [])
