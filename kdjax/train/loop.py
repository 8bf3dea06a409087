"""The training loop's bookkeeping, apart from what a step computes.

`Loop.run` calls `step_fn` for each step and keeps the steps' metrics on the device until the
next log (no host sync per step). At every log and before every checkpoint it checks them: the
first non-finite loss term stops the run (errors.NonFiniteLoss) before that step is saved, so a
checkpoint never holds the result of a non-finite step. It evaluates and saves on the configured
cadence, and on a stop request (SIGTERM) saves the current step and raises errors.Preempted.
What a step, an evaluation or a save does is the caller's (hooks), so the loop is tested with a
fake step.
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from kdjax import errors
from kdjax.steps import STATE_FINITE

NON_FINITE_FIX = ("lower optimizer.learning_rate or that term's loss.*_weight (in a new --workdir, "
                  "or with --overwrite), or check the data")


def check_finite(step: int, metrics: dict, last_saved, ckpt_dir: str, terms=()) -> None:
  """Raises errors.NonFiniteLoss naming the step and the loss terms (`terms` first) if any
  metric of `step` is not finite, or if its updated state is not (STATE_FINITE)."""
  kept = (f"the last good checkpoint, step {last_saved} in {ckpt_dir}, is kept"
          if last_saved is not None else "no checkpoint was saved")
  bad = {k: float(v) for k, v in metrics.items() if k != STATE_FINITE and not np.isfinite(v)}
  if bad:
    names = [k for k in bad if k in terms] or [k for k in bad if k == "loss"] or list(bad)
    what = ", ".join(f"{k} = {bad[k]}" for k in names)
    raise errors.NonFiniteLoss(
        f"non-finite loss at step {step}: {what} (loss term{'s' if len(names) > 1 else ''} "
        f"{names}); stopped before checkpointing it, {kept}: {NON_FINITE_FIX}")
  if metrics.get(STATE_FINITE, 1.0) != 1.0:
    raise errors.NonFiniteLoss(
        f"non-finite parameters after step {step}: its loss and gradient were finite but the "
        f"update overflowed; stopped before checkpointing it, {kept}: {NON_FINITE_FIX}")


@dataclasses.dataclass
class Loop:
  """Steps `start_step + 1 .. total_steps`: log every `log_every`, evaluate every `eval_every`
  (0: only at the end), save every `checkpoint_every` and at the end. `last_saved`: the step of
  the checkpoint resumed from (None: none); `terms`: the loss terms' metric names, named first
  when one is not finite."""

  total_steps: int
  start_step: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  ckpt_dir: str
  last_saved: int | None = None
  terms: tuple = ()
  pending: list = dataclasses.field(default_factory=list)  # (step, metrics on the device)
  checked: list = dataclasses.field(default_factory=list)  # host metrics of pending[:len]

  def check_pending(self) -> list[dict]:
    """Checks every step since the last log (each fetched from the device once); returns
    their metrics on the host."""
    new = self.pending[len(self.checked):]
    for (step, _), m in zip(new, jax.device_get([m for _, m in new])):
      check_finite(step, m, self.last_saved, self.ckpt_dir, self.terms)
      self.checked.append(m)
    return self.checked

  def means(self) -> dict:
    """The mean of each metric over the steps since the last log (checked first)."""
    values = self.check_pending()
    self.pending, self.checked = [], []
    return {k: float(np.mean([v[k] for v in values])) for k in values[0] if k != STATE_FINITE}

  def save(self, step: int, state, save: Callable) -> None:
    self.check_pending()  # a checkpoint never holds the result of a non-finite step
    save(step, state)
    self.last_saved = step

  def run(self, state, step_fn: Callable, *, log: Callable, evaluate: Callable, save: Callable,
          should_stop: Callable = lambda step: False, stop_requested: Callable = lambda: False,
          wait: Callable = lambda: None):
    """(state after the last step, the last evaluation's metrics).

    step_fn(state, step) -> (state, metrics on the device); log(step, means); evaluate(step,
    state) -> metrics; save(step, state); should_stop(step): stop after `step` (pre-emption);
    stop_requested(): a stop asked for before the first step; wait(): saves in flight done."""
    if stop_requested():  # SIGTERM during set-up: nothing new to save
      saved = (f"checkpoint step {self.last_saved}" if self.last_saved is not None
               else "no checkpoint")
      raise errors.Preempted(
          f"preempted before training step {self.start_step + 1}: nothing new to save "
          f"({saved} in {self.ckpt_dir}); run the same command again to resume")
    final = {}
    for step in range(self.start_step + 1, self.total_steps + 1):
      state, metrics = step_fn(state, step)
      self.pending.append((step, metrics))
      is_last = step == self.total_steps
      if step % self.log_every == 0 or is_last:
        log(step, self.means())
      if is_last or (self.eval_every and step % self.eval_every == 0):
        final = evaluate(step, state)
      if is_last or step % self.checkpoint_every == 0:
        self.save(step, state, save)
      if not is_last and should_stop(step):
        if self.last_saved != step:
          self.save(step, state, save)
        wait()
        raise errors.Preempted(f"preempted: saved a checkpoint at step {step} in "
                               f"{self.ckpt_dir}; run the same command again to resume")
    return state, final
