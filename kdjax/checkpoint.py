"""orbax checkpoints of the student's TrainState plus a JSON record (data position, cost).

Only the trainable state is saved: teacher parameters are frozen inputs, rebuilt from their
source at start-up and never checkpointed. Saves are asynchronous (the device->host copy is
synchronous, so the donated state may be reused at once); orbax writes each step to a temporary
directory and renames it when complete, so a half-written checkpoint never becomes the latest.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int):
    self.directory = os.path.abspath(directory)
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "meta"))

  def latest_step(self):
    return self._mgr.latest_step()

  def all_steps(self):
    return list(self._mgr.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state):
    """Restores `step` into arrays with the shardings of `abstract_state` (ShapeDtypeStructs)."""
    restored = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

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

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
