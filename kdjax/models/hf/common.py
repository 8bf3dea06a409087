"""What every teacher family shares: the family contract and the torch -> Flax weight helpers.

A family module (resnet.py, vit.py, mobilenet_v2.py) ports one Hugging Face `transformers`
architecture to Flax linen and converts its safetensors weights. It provides:

  MODEL_TYPES: the config.json `model_type` values it handles.
  build(config, keys, *, dtype, num_classes) -> nn.Module
      config: config.json as a dict. keys: the tensor names in the checkpoint, so optional parts
      (a pooler, a classifier, a projection) exist exactly when their weights do.
      num_classes: None keeps the checkpoint's head (if it has one); an int gives a new head
      of that size named "classifier" (the loader zero-initialises it).
      The module's `__call__(pixels [B, H, W, 3] float, train=False)` returns a dict with the
      outputs of the HF model of the same names (`last_hidden_state` NHWC for CNNs,
      `pooler_output` [B, D], `logits`, `image_embeds`) and `features` [B, D]: the vector the
      classification head reads. Compute in `dtype`, params float32.
  convert(tensors, module) -> flax variables {"params": ..., "batch_stats": ...}
      reads every weight it uses with `tensors.take(name)` and skips on purpose with
      `tensors.skip(prefix)`; the loader then fails on anything left unused, missing or
      mis-shaped, naming the tensors.
An exportable family (kdjax.export --format=hf) also provides:
  hf_export(config, variables) -> (export config, architecture, export variables)
      config: the run's config.json; variables: the Flax variables of the run's backbone (as
      `build(config, keys without the head, num_classes=None)` made it) with the run's head
      "classifier" (on the backbone's `features`). Returns the config.json to write, the
      transformers `<X>ForImageClassification` class name, and the variables of
      `build(that config, hf_layout(...), num_classes=None)` giving the same logits; a
      UserError naming the formats that export any run where transformers cannot.
  hf_layout(config, num_classes) -> {name: (shape, dtype)}: that class's state dict.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import errors

# HF ACT2FN names -> jax, for every family. torch's "gelu" is the exact (erf) one.
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": nn.relu,
    "relu6": jax.nn.relu6,
    "silu": nn.silu,
    "swish": nn.silu,
    "tanh": jnp.tanh,
}

# What exports any run, for refusals of --format=hf (kdjax.export).
OTHER_FORMATS = "--format=stablehlo (any run) or --format=onnx"


def num_labels(config: dict) -> int:
  """A head's class count; config.json omits id2label when it is the default (2 labels)."""
  return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def activation(name: str):
  if name not in ACTIVATIONS:
    raise errors.UserError(f"the checkpoint's activation {name!r} (config.json) is not ported "
                           f"to kdjax; supported: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class Tensors:
  """A checkpoint's tensors by name, recording which ones the converter used."""

  def __init__(self, arrays: dict[str, np.ndarray], prefixes: tuple[str, ...] = ()):
    self._arrays = arrays
    self._unused = set(arrays)
    self._skipped = set()
    self._prefixes = prefixes

  def _resolve(self, name: str) -> str:
    for prefix in ("", *self._prefixes):
      if prefix + name in self._arrays:
        return prefix + name
    raise KeyError(f"checkpoint has no tensor {name!r} (also tried prefixes {self._prefixes})")

  def has(self, name: str) -> bool:
    try:
      self._resolve(name)
    except KeyError:
      return False
    return True

  def take(self, name: str) -> np.ndarray:
    full = self._resolve(name)
    self._unused.discard(full)
    self._skipped.discard(full)
    return np.asarray(self._arrays[full], dtype=np.float32)

  def skip(self, prefix: str) -> None:
    """Marks the tensors starting with `prefix` (after any known prefix) as skipped."""
    for p in ("", *self._prefixes):
      names = {k for k in self._unused if k.startswith(p + prefix)}
      self._unused -= names
      self._skipped |= names

  def unused(self) -> list[str]:
    return sorted(self._unused)

  def skipped(self) -> list[str]:
    """The tensors skipped on purpose and never taken (e.g. DINOv2's mask token): an export
    writes them as zeros."""
    return sorted(self._skipped)


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight [O, I/groups, kh, kw] -> Flax [kh, kw, I/groups, O]."""
  return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> Flax [in, out]."""
  return np.transpose(w)


def batch_norm(tensors: Tensors, prefix: str) -> tuple[dict, dict]:
  """torch BatchNorm2d at `prefix` -> (params {scale, bias}, batch_stats {mean, var})."""
  tensors.skip(prefix + ".num_batches_tracked")
  params = {"scale": tensors.take(prefix + ".weight"), "bias": tensors.take(prefix + ".bias")}
  stats = {"mean": tensors.take(prefix + ".running_mean"),
           "var": tensors.take(prefix + ".running_var")}
  return params, stats


def layer_norm(tensors: Tensors, prefix: str) -> dict:
  return {"scale": tensors.take(prefix + ".weight"), "bias": tensors.take(prefix + ".bias")}


def dense(tensors: Tensors, prefix: str, bias: bool = True) -> dict:
  out = {"kernel": dense_kernel(tensors.take(prefix + ".weight"))}
  if bias:
    out["bias"] = tensors.take(prefix + ".bias")
  return out
