"""Process-level XLA settings, applied before JAX initialises its backends.

On CPU, XLA (jaxlib 0.10.x) sends convolutions to YNNPACK by default, whose weight-gradient
convolutions run at 5-20 GFLOP/s here; Eigen's run ~10x faster (experiments/README.md). The flag
below routes convolutions to Eigen. It is only added on CPU-only installs: XLA aborts on flags it
does not know, and the GPU/TPU builds have no reason to carry this CPU flag; it is also only added
for the jaxlib releases we measured (TESTED_JAXLIB; extend it after checking a new release).
"""

import importlib.metadata
import importlib.util
import logging
import os

import jax
from absl import logging as absl_logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ logs, if TFDS loads it

CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "libtpu")
TESTED_JAXLIB = ("0.10.",)


def cpu_only_install() -> bool:
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def flag_known_to_jaxlib() -> bool:
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  return version.startswith(TESTED_JAXLIB)


def with_cpu_flags(xla_flags: str) -> str:
  """`xla_flags` plus kdjax's CPU flags, unless the user already set those flags."""
  present = {f.split("=")[0] for f in xla_flags.split()}
  extra = [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in present]
  return " ".join([xla_flags, *extra]).strip()


def configure(fast_cpu_convolutions: bool) -> None:
  """Call before JAX starts its first backend (the first array or device query): XLA reads
  XLA_FLAGS then. Importing JAX does not start one."""
  if fast_cpu_convolutions and cpu_only_install() and flag_known_to_jaxlib():
    os.environ["XLA_FLAGS"] = with_cpu_flags(os.environ.get("XLA_FLAGS", ""))


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` for `--distributed`: JAX detects TPU pods, SLURM, Open MPI
  and Kubernetes by itself; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID (JAX reads only the first, kdjax passes the other two).
  On CPU-only installs cross-process collectives use gloo (jax 0.10's default, set explicitly
  unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says otherwise), so localhost runs work."""
  if cpu_only_install() and not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {key: int(os.environ[var]) for key, var in
            (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
            if os.environ.get(var)}
  jax.distributed.initialize(**kwargs)


class QuietLibraries(logging.Filter):
  """Drops the libraries' INFO chatter (orbax: dozens of lines per checkpoint; TFDS: a line per
  dataset opened; JAX: the accelerator plugins it did not find; jax2onnx, onnx_ir: their
  passes) and warnings that are expected here (orbax on reading other runs' checkpoints
  read-only, which kdjax does on purpose; TFDS decoding PNGs without OpenCV; jax2onnx's plugins
  for libraries not installed); keeps every other warning and error."""

  LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge", "/jax2onnx/",
               "/onnx_ir/")
  EXPECTED = ("read_only=True", "directory is read only", "Metadata file does not exist",
              "OpenCV is not installed",
              # jax2onnx's plugins for libraries kdjax does not install (equinox, dm_pix)
              "Skipping import of jax2onnx.", "Skipping pkgutil import of jax2onnx.")

  def filter(self, record):
    if record.levelno >= logging.ERROR or not any(lib in record.pathname
                                                  for lib in self.LIBRARIES):
      return True
    return (record.levelno >= logging.WARNING
            and not any(note in record.getMessage() for note in self.EXPECTED))


def quiet_libraries() -> None:
  """The console shows kdjax's lines: QuietLibraries on absl's handler (call under app.run),
  unless --verbosity=1 (or more) asks for the libraries' records too."""
  if absl_logging.get_verbosity() < 1:
    absl_logging.get_absl_handler().addFilter(QuietLibraries())
