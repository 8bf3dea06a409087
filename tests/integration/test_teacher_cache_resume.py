"""A teacher-cache build (kdjax/distill/teacher_cache.py) SIGKILLed part-way, then SIGTERMed
part-way,
resumes through the command line to the uninterrupted build's cache: every (position, view)
once, none missing, the same bits; finished shards are kept, dead writers' temporary files
removed and live ones left alone. (Generation's counterpart is in test_generate.py.)

Four CLI runs of the demo config, K=2 views of the 200 training images, 64 per shard (4 shards):
the reference; a run killed after its first shard; a resume stopped by SIGTERM after its first
shard (exit status 143); a resume to the end. tests/throttled.py makes the killed runs sleep
after each shard so that the signal lands between shards, not after the last one.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import test_distill  # the teachers it saves once per session (shared with its tests)
from conftest import REPO, throttled, with_test_flags

from kdjax import files

teacher_dirs = test_distill.teacher_dirs  # the same fixture: one teacher per session
SHARDS = 4  # ceil(200 / 64)
VIEWS = 2
THROTTLE_S = "3"  # per shard; only the SIGTERMed run waits it out (once)


def _command(tfds_dir, teacher, workdir, cache):
  return [sys.executable, "-m", "kdjax.main",
          f"--config=configs/demo.py:runlocal,arm=kd,teacher_dir={teacher}",
          f"--workdir={workdir}", f"--config.data.data_dir={tfds_dir}",
          "--config.model.width=8", "--config.data.image_size=8", "--config.data.load_size=8",
          "--config.total_steps=2", "--config.teacher.mode=cached",
          f"--config.teacher.cache_views={VIEWS}", f"--config.teacher.cache_dir={cache}",
          "--config.teacher.cache_shard_size=64", "--config.teacher.evaluate=False"]


def _start(cmd, log_path, throttle=None):
  env = dict(os.environ, PYTHONPATH=REPO)
  env["XLA_FLAGS"] = with_test_flags(env.get("XLA_FLAGS", ""))
  if throttle:
    cmd = throttled(cmd, "cache", throttle)
  with open(log_path, "w") as log:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _shards(cache):
  return sorted(cache.glob("shard-*.array_record"))


def _signal_after_shards(proc, cache, n, sig, log_path, timeout=300):
  """Sends `sig` to `proc` as soon as `cache` holds `n` finished shards."""
  deadline = time.monotonic() + timeout
  while len(_shards(cache)) < n:
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      proc.wait()
      pytest.fail(f"no {n} shards in time (exit {proc.returncode}):\n"
                  f"{log_path.read_text()[-3000:]}")
    time.sleep(0.02)
  proc.send_signal(sig)
  try:
    return proc.wait(timeout=120)
  finally:
    proc.kill()


def _stats(paths):
  return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def _records(cache):
  """(position, view) -> record, over all shards; fails on a duplicate."""
  out = {}
  for shard in _shards(cache):
    for r in test_distill._records(shard):
      key = (int(r["position"]), int(r["view"]))
      assert key not in out, f"{key} twice (again in {shard.name})"
      out[key] = r
  return out


@pytest.fixture(scope="module")
def reference(tfds_dir, teacher_dirs, tmp_path_factory):
  """The uninterrupted build's cache directory (made once per session)."""

  def make(root):
    log = root / "log.txt"
    proc = _start(_command(tfds_dir, teacher_dirs["ten"], root / "run", root / "cache"), log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

  return test_distill._once(tmp_path_factory, "cache_reference", make) / "cache"


def test_uninterrupted_build_holds_every_view_once_and_refuses_another_shard_size(
    reference, tfds_dir, teacher_dirs, tmp_path):
  assert len(_shards(reference)) == SHARDS
  assert sorted(_records(reference)) == [(p, v) for p in range(200) for v in range(VIEWS)]
  assert sorted(os.listdir(reference)) == ["cache.json"] + [s.name for s in _shards(reference)]

  before = _stats(reference.iterdir())
  cmd = _command(tfds_dir, teacher_dirs["ten"], tmp_path / "run", reference)
  proc = _start([*cmd, "--config.teacher.cache_shard_size=100"], tmp_path / "log.txt")
  out = (tmp_path / "log.txt").read_text() if proc.wait(timeout=600) else ""
  assert proc.returncode == 2, out[-3000:]
  assert "differs in ['shard_size']" in out and "teacher.cache_shard_size=64" in out, out[-3000:]
  assert _stats(reference.iterdir()) == before  # refused: nothing written or removed


def test_killed_then_preempted_build_resumes_to_the_uninterrupted_cache(reference, tfds_dir,
                                                                        teacher_dirs, tmp_path):
  cache, work = tmp_path / "cache", tmp_path / "run"
  cmd = _command(tfds_dir, teacher_dirs["ten"], work, cache)

  # SIGKILL after the first shard: the shards written so far stay, the cache is unfinished.
  proc = _start(cmd, tmp_path / "killed.txt", THROTTLE_S)
  assert _signal_after_shards(proc, cache, 1, signal.SIGKILL, tmp_path / "killed.txt") == -9
  killed = _shards(cache)
  assert 1 <= len(killed) < SHARDS, [s.name for s in killed]
  kept = _stats(killed)

  # What killed and concurrent writers leave: a temporary file of a dead process on this host
  # (the killed run's pid), one of another host's writer over an hour old: both stale; one of a
  # live process (this one, as if a concurrent run writing that shard): left alone.
  host = files.HOST
  dead = cache / f"shard-00003.array_record.{host}.{proc.pid}.{uuid.uuid4().hex}.tmp"
  old = cache / f"shard-00002.array_record.elsewhere.{os.getpid()}.{uuid.uuid4().hex}.tmp"
  live = cache / f"shard-00003.array_record.{host}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
  for f in (dead, old, live):
    f.write_bytes(b"half a shard")
  two_hours_ago = time.time() - 2 * 3600
  os.utime(old, (two_hours_ago, two_hours_ago))

  # SIGTERM after the resume's first shard: it stops there, exit 143, saying where it is.
  log = tmp_path / "preempted.txt"
  proc = _start(cmd, log, THROTTLE_S)
  status = _signal_after_shards(proc, cache, len(killed) + 1, signal.SIGTERM, log)
  out = log.read_text()
  assert status == 143, out[-3000:]
  done = _shards(cache)
  assert len(done) == len(killed) + 1 < SHARDS, [s.name for s in done]
  assert (f"preempted while building the teacher cache: {len(done)} of {SHARDS} shards are "
          f"complete in {cache}; run the same command again to resume") in out, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  assert not dead.exists() and not old.exists() and live.exists()
  assert _stats(done[:len(killed)]) == kept  # finished shards are never rewritten
  kept = _stats(done)

  # The resume to the end: same command, no throttle.
  log = tmp_path / "resumed.txt"
  proc = _start(cmd, log)
  assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
  assert "final test accuracy:" in log.read_text()
  assert {n: s for n, s in _stats(_shards(cache)).items() if n in kept} == kept
  assert live.exists()  # still a live writer's
  live.unlink()
  assert sorted(os.listdir(cache)) == sorted(os.listdir(reference))  # no temporary file left
  got, want = _records(cache), _records(reference)
  assert sorted(got) == sorted(want) == [(p, v) for p in range(200) for v in range(VIEWS)]
  for key, w in want.items():  # the same program on the same batches: the same bits
    g = got[key]
    assert g.keys() == w.keys() == {"position", "row", "view", "aug_seed", "features", "logits"}
    for name in w:
      np.testing.assert_array_equal(g[name], w[name], err_msg=f"{key} {name}")
      assert np.asarray(g[name]).dtype == np.asarray(w[name]).dtype, (key, name)
