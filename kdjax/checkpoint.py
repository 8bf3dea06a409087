"""orbax checkpoints of the student's TrainState plus a JSON record (data position, cost).

Only the trainable state is saved: teacher parameters are frozen inputs, rebuilt from their
source at start-up and never checkpointed. Saves are asynchronous (the device->host copy is
synchronous, so the donated state may be reused at once); orbax writes each step to a temporary
directory and renames it when complete, so a half-written checkpoint never becomes the latest
(the temporary directories of a killed save are removed at the next start).

Each save records a checksum per array of the state (from the arrays' bits, before they are
written). `restore_latest` restores the newest step, recomputes the
checksums and, if that step cannot be read or does not match (a truncated or damaged file),
reports it, moves it aside (WORKDIR/checkpoints_damaged/, nothing is deleted) and tries the
previous one.
"""

import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from kdjax import errors

DAMAGED_DIR = "checkpoints_damaged"


def checksums(tree) -> list[int]:
  """One uint32 per leaf: a position-weighted sum of the leaf's words (wrapping), on the host
  copy (orbax makes one anyway; a jitted version compiles for seconds per state structure).

  Not cryptographic: it detects truncation, zeroed or flipped bits and moved values."""
  out = []
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    x = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    words = (x.view(np.uint8) if x.dtype.itemsize == 1 or x.dtype == np.bool_ else
             x.view({2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]))
    words = words.reshape(-1).astype(np.uint32)
    weights = np.arange(words.size, dtype=np.uint32) * np.uint32(2654435761) + np.uint32(1)
    out.append(int(np.sum((words ^ np.uint32(0x9E3779B9)) * weights, dtype=np.uint32)))
  return out


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int):
    self.directory = os.path.abspath(directory)
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True),
        item_names=("state", "meta"))

  def latest_step(self):
    return self._mgr.latest_step()

  def all_steps(self):
    return list(self._mgr.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    meta = {**meta, "checksums": checksums(state)}
    self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state):
    """Restores `step` into arrays with the shardings of `abstract_state` (ShapeDtypeStructs)."""
    restored = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_latest(self, abstract_state):
    """(state, meta) of the newest step that reads back intact, or None without checkpoints.

    A step that fails (unreadable, or its checksums differ) is reported and moved aside; if
    every step fails, the run stops with a message instead of starting again from scratch."""
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, abstract_state)
        saved = meta.get("checksums")
        if saved is not None and saved != checksums(state):
          raise ValueError("the restored arrays do not match the checksums saved with them")
      except Exception as e:  # noqa: BLE001  (any failure to read back means a damaged step)
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        logging.warning("checkpoint step %d in %s is damaged (%s): moving it to %s and using "
                        "the previous one", step, self.directory, reason, DAMAGED_DIR)
        damaged.append(step)
        self._move_aside(step)
        continue
      if damaged:
        logging.warning("resuming from step %d instead of the damaged step(s) %s", step,
                        damaged)
      return state, meta
    if damaged:
      raise errors.UserError(
          f"no checkpoint in {self.directory} reads back intact (damaged steps {damaged}, moved "
          f"to {os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)}): pass --overwrite "
          "to start the run again, or use another --workdir")
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


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
