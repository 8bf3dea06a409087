"""Pre-emption: SIGTERM asks a run to save a checkpoint and stop; every process stops at one step.

One process: a Python SIGTERM handler sets a flag; the trainer checks it after every step (and
long set-up phases, e.g. the teacher cache, between units of work), saves, and exits with
status 143 (errors.Preempted). Several processes (`jax.distributed`): JAX's preemption service
catches SIGTERM in whichever process receives it and agrees on a step for all of them
(`multihost_utils.reached_preemption_sync_point`, called after every step); the trainer saves
that step on every process and stops. The SIGKILL a scheduler sends when its grace period ends
is survived by the checkpoints themselves: a run resumes from its last complete checkpoint.
With several processes the teacher-cache build does not stop early (it resumes by shards).
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils

_requested = threading.Event()


def _on_sigterm(signum, frame):
  del signum, frame
  _requested.set()  # only a flag: logging here could re-enter a stream the main thread writes


class Guard:
  """`with Guard() as guard:` ... `guard.should_stop(step)` after each step."""

  def __init__(self):
    self.multi_process = jax.process_count() > 1
    self._previous = None

  def __enter__(self):
    _requested.clear()
    # Several processes: JAX's own notifier owns SIGTERM (a Python handler would replace it).
    if not self.multi_process and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop (every process gets the same answer for a step)."""
    if self.multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return _requested.is_set()


def requested() -> bool:
  """Whether this process received SIGTERM (for set-up phases that can stop between units of
  work; one process only: several processes stop together in the training loop)."""
  return jax.process_count() == 1 and _requested.is_set()
