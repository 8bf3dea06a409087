"""kdjax.losses on a sharded batch: the same global batch on 1 device and split over 8 (each in
its own process, as XLA fixes the device count at start-up) gives the same losses: every
batch-coupled loss (uniformity, AFT, RKD, CRD with its negatives and memory update) and mixup
included."""

import json

import numpy as np
from conftest import run_python

from kdjax import runtime

_SHARDED = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from kdjax import losses, sharding
from kdjax.data import augment
mesh = sharding.make_mesh()
rng = np.random.RandomState(1)
unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
arrays = dict(zs=unit(rng.randn(16, 8)), zt=unit(rng.randn(16, 8)), s=rng.randn(16, 10),
              t=rng.randn(16, 10), g=rng.randn(16, 5), phi=rng.randn(16, 12))
rho, w = rng.randn(12), rng.randn(5, 12)
batch = {k: jax.device_put(jnp.asarray(v, jnp.float32), sharding.batch_sharding(mesh))
         for k, v in arrays.items()}
labels = rng.randint(0, 10, 16)
batch["labels"] = jax.device_put(jnp.asarray(labels, jnp.int32), sharding.batch_sharding(mesh))
batch["index"] = jax.device_put(jnp.asarray(rng.permutation(40)[:16], jnp.int32),
                                sharding.batch_sharding(mesh))
table = losses.class_table(rng.randint(0, 4, 40))
memory = losses.init_memory(jax.random.key(3), 40, 8)

@jax.jit
def all_losses(b):
  return {"alignment": losses.alignment(b["zs"], b["zt"]),
          "uniformity": losses.uniformity(b["zs"]),
          "kd": losses.kd_kl(b["s"], b["t"]),
          "aft": losses.aft(b["g"], b["phi"], jnp.asarray(rho)),
          "aft_rbf": losses.aft(b["g"], b["phi"], jnp.asarray(rho), "rbf"),
          "feature_kd": losses.feature_kd(b["g"], b["phi"], jnp.asarray(w)),
          "dkd": sum(losses.dkd(b["s"], b["t"], b["labels"])),
          "rkd_distance": losses.rkd_distance(b["g"], b["phi"]),
          "rkd_angle": losses.rkd_angle(b["g"], b["phi"]),
          "crd": _crd(b),
          "mixup": _mixup(b)}

def _mixup(b):
  # the mixed global batch (partner: the batch rolled by one), weighted by position
  images, label_mix, w = augment.mixup(b["g"], b["labels"], jax.random.key(5), 1.0, 0.5)
  pos = jnp.arange(16, dtype=jnp.float32)[:, None]
  return jnp.sum(images * pos) + jnp.sum(label_mix * pos[:, 0]) + jnp.sum(w * pos[:, 0])

def _crd(b):
  # CRD's loss and the bank rows it wrote: negatives drawn from one key over the global batch,
  # the memory updated at the global rows
  negatives = losses.sample_negatives(jax.random.key(4), jnp.asarray(table["group"])[b["index"]],
                                      table, 32)
  loss, new = losses.crd(b["zs"], b["zt"], memory, b["index"], negatives)
  return loss + jnp.sum(new["student"] * 1.7) + jnp.sum(new["teacher"]) + new["z_student"]

print(json.dumps({"devices": mesh.devices.size,
                  **{k: float(v) for k, v in all_losses(batch).items()}}))
"""


def test_losses_are_global_over_a_sharded_batch():
  """The same global batch on 1 device and split over 8 gives the same losses."""
  results = []
  for n in (1, 8):
    env = {"XLA_FLAGS": runtime.with_cpu_flags(f"--xla_force_host_platform_device_count={n}")}
    proc = run_python(_SHARDED, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  one, eight = results
  assert one.pop("devices") == 1 and eight.pop("devices") == 8
  for key in one:
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, err_msg=key)
