"""One mesh, one data axis: shardings and global-array assembly for every device count.

The same code runs on 1 CPU, N fake CPU devices, a GPU, a TPU pod or several hosts: the mesh
spans `jax.devices()` (all processes), batches are sharded on its `data` axis and parameters are
replicated, so a plain `jnp.mean` over a batch inside `jax.jit` is already the global mean
(BatchNorm statistics included).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kdjax import errors

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, in jax.devices() (process-major) order."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(global_batch: int, mesh: Mesh, what: str = "batch_size") -> None:
  n = mesh.devices.size
  if global_batch % n:
    raise errors.UserError(f"{what}={global_batch} is not divisible by the {n} devices of the "
                           f"mesh: choose a multiple of {n}")


def global_from_host(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a numpy array that every process holds in full (indices, labels)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def host_copy(x: jax.Array) -> np.ndarray:
  """A replicated global array as numpy, read from this process's own copy (device_get needs
  every shard addressable, which a multi-process array is not)."""
  return np.asarray(x.addressable_shards[0].data)


def put_global(tree, shardings):
  """Host (numpy) arrays held in full by every process -> global arrays with `shardings`.

  Unlike `jax.device_put` of host data onto a multi-process sharding, nothing is compared
  across processes, and no device ever holds more than its shard.
  """
  return jax.tree.map(global_from_host, tree, shardings)


def global_from_process_local(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """A batch-sharded global array from this process's slice of the global batch."""
  x = np.asarray(x)
  global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
  return jax.make_array_from_process_local_data(batch_sharding(mesh), x, global_shape)


def process_slice(global_batch: int) -> slice:
  """The rows of a global batch that this process's devices hold (mesh is process-major)."""
  per_process = global_batch // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


PARAM_SHARDINGS = ("replicate", "fsdp")
FSDP_MIN_SIZE = 2**16  # arrays smaller than this stay replicated (gathering them costs more)


def fsdp_spec(shape: tuple[int, ...], num_devices: int, min_size: int = FSDP_MIN_SIZE) -> P:
  """Splits the largest dimension divisible by the device count; small arrays stay whole.

  Parameters sharded this way are gathered by XLA where a computation needs them whole
  (FSDP / ZeRO-3 style): memory per device falls by the device count for the big matrices.
  """
  if int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % num_devices == 0:
      return P(*([None] * axis + [DATA_AXIS]))
  return P()


def param_shardings(tree, mesh: Mesh, mode: str = "replicate", min_size: int = FSDP_MIN_SIZE):
  """NamedShardings for a parameter tree: replicated, or split over the data axis ("fsdp")."""
  if mode == "replicate":
    return jax.tree.map(lambda _: replicated(mesh), tree)
  assert mode == "fsdp", mode  # validate.check refuses other modes
  n = mesh.devices.size
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), n, min_size)), tree)


def sharding_of(tree):
  """The sharding of every array of `tree` (for a jit's in_shardings)."""
  return jax.tree.map(lambda x: x.sharding, tree)
