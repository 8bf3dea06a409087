"""orbax checkpoints of the student's TrainState plus a JSON record (data position, cost).

Only the trainable state is saved: teacher parameters are frozen inputs, rebuilt from their
source at start-up and never checkpointed. Saves are asynchronous (the device->host copy is
synchronous, so the donated state may be reused at once); orbax writes each step to a temporary
directory and renames it when complete, so a half-written checkpoint never becomes the latest
(the temporary directories of a killed save are removed at the next start).

Each save records a CRC-32 per array of the state (before the arrays are written).
`restore_latest` restores the newest step and checks them; if that step cannot be read or does
not match (a truncated or damaged file), it tries the previous one, and once one restores it
reports the newer ones and moves them aside (WORKDIR/checkpoints_damaged/, nothing deleted).
"""

import copy
import os
import shutil
import time
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from kdjax import errors

DAMAGED_DIR = "checkpoints_damaged"


def checksums(tree) -> list[int]:
  """The CRC-32 of each leaf's bytes (on the host copy, which orbax makes anyway): detects
  truncation, zeroed, flipped or moved bits."""
  out = []
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    x = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    out.append(zlib.crc32(x.reshape(-1).view(np.uint8)))
  return out


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int, read_only: bool = False):
    """`read_only`: for reading another run's checkpoints (a kdjax run used as a teacher, a
    test) without touching them, e.g. the temporary directory of a save in progress there."""
    self.directory = os.path.abspath(directory)
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only),
        item_names=("state", "meta"))

  def latest_step(self):
    return self._mgr.latest_step()

  def all_steps(self):
    return list(self._mgr.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    # a copy: orbax serialises it in the background while the caller goes on changing its dicts
    meta = copy.deepcopy({**meta, "checksums": checksums(state)})
    self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state):
    """Restores `step` into arrays with the shardings of `abstract_state` (ShapeDtypeStructs)."""
    restored = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_latest(self, abstract_state):
    """(state, meta) of the newest step that reads back intact, or None without checkpoints.

    Steps are tried newest first. When one restores, the newer steps that failed (unreadable,
    or their checksums differ: damaged files) are reported and moved aside. When none restores
    nothing is moved (the cause may be the code, the memory or the filesystem rather than the
    files) and the run stops with the newest step's error. Several processes agree on each
    step's outcome before anything is moved."""
    failed = []  # (step, reason), newest first
    for step in sorted(self.all_steps(), reverse=True):
      reason = None
      try:
        state, meta = self.restore(step, abstract_state)
        saved = meta.get("checksums")
        if saved is not None and saved != checksums(state):
          reason = "its arrays do not match the checksums saved with them"
      except Exception as e:  # noqa: BLE001  (reported below, with the other steps' outcome)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:300] or type(e).__name__
      if not _everywhere(reason is None):
        reason = reason or "another process could not restore it"
        logging.warning("checkpoint step %d in %s cannot be restored: %s", step, self.directory,
                        reason)
        failed.append((step, reason))
        continue
      for bad, why in failed:
        logging.warning("checkpoint step %d is damaged (%s): moved to %s; resuming from step %d",
                        bad, why, DAMAGED_DIR, step)
        self._move_aside(bad)
      return state, meta
    if failed:
      raise errors.UserError(
          f"no checkpoint in {self.directory} can be restored (steps "
          f"{[s for s, _ in failed]}; step {failed[0][0]}: {failed[0][1]}): if the code or the "
          "config changed since they were written, run the version that wrote them; if the "
          "files are damaged, move them away (or pass --overwrite to start the run again)")
    return None

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      target = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR,
                            f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"kdjax checkpoint {step} moved aside")
    self._mgr.reload()

  def saved_structure(self, step: int):
    """The saved state's tree of array metadata (shapes, dtypes), without reading arrays."""
    return ocp.PyTreeCheckpointer().metadata(
        os.path.join(self.directory, str(step), "state")).item_metadata

  def restore_numpy(self, step: int, keys=("params", "batch_stats")) -> dict:
    """Those parts of the saved state as host numpy arrays, whatever device topology wrote
    them (e.g. a probe trained on 8 GPUs, loaded as a teacher on a CPU); nothing else is read."""
    tree = self.saved_structure(step)
    wanted = {k: tree[k] for k in keys}
    item = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    return ocp.PyTreeCheckpointer().restore(
        os.path.join(self.directory, str(step), "state"),
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()


def _everywhere(ok: bool) -> bool:
  """Whether `ok` holds in every process (one process: `ok`)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
