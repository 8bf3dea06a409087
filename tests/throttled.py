"""Runs a kdjax command with a pause after each unit of work, so a test can signal it part-way:

  python tests/throttled.py train=0.2 -m kdjax.main --config=... --workdir=...
  python tests/throttled.py diffusion=0.2 experiments/train_tiny_diffusion.py --config=...

train=S: after every train step (kdjax.train.loop); cache=S: after every teacher-cache shard
(kdjax.distill.teacher_cache); generate=S: after every generated batch
(kdjax.generate.run.write_batch); diffusion=S: after every generator training step's batch
(kdjax.generate.train.batch_rows).
The pause is patched in here, in the test's process, so production code carries no test hook.
"""

import functools
import runpy
import sys
import time

from kdjax.distill import teacher_cache
from kdjax.train import loop


def _after(fn, seconds):
  @functools.wraps(fn)
  def slow(*args, **kwargs):
    out = fn(*args, **kwargs)
    time.sleep(seconds)
    return out
  return slow


def _slow_steps(run, seconds):
  @functools.wraps(run)
  def slow_run(self, state, step_fn, **kwargs):
    return run(self, state, _after(step_fn, seconds), **kwargs)
  return slow_run


PATCHES = {
    "train": lambda s: setattr(loop.Loop, "run", _slow_steps(loop.Loop.run, s)),
    "cache": lambda s: setattr(teacher_cache, "_write_shard",
                               _after(teacher_cache._write_shard, s)),
    "generate": lambda s: _slow_generate(s),
    "diffusion": lambda s: _slow_diffusion(s),
}


def _slow_generate(seconds):
  # Imported here, only for generate=S: kdjax.generate.run imports diffusers and transformers
  # (seconds), which the train and cache pauses do not need.
  from kdjax.generate import run

  run.write_batch = _after(run.write_batch, seconds)


def _slow_diffusion(seconds):
  from kdjax.generate import train  # as _slow_generate: diffusers only when asked for

  train.batch_rows = _after(train.batch_rows, seconds)


def main():
  what, _, seconds = sys.argv[1].partition("=")
  PATCHES[what](float(seconds))
  if sys.argv[2].endswith(".py"):  # a script
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return
  if sys.argv[2] != "-m":
    raise SystemExit("usage: throttled.py WHAT=SECONDS (-m MODULE | SCRIPT.py) ARGS...")
  module = sys.argv[3]
  sys.argv = [module, *sys.argv[4:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
