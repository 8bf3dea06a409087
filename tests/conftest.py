"""Shared fixtures: a tiny, fast config on the embedded digits, prepared once per session."""

import os
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kdjax import runtime  # noqa: E402  (no jax import; must run before any test imports jax)

runtime.configure(fast_cpu_convolutions=True)  # as kdjax.main does; subprocesses inherit it

# Tests only: LLVM at -O0 compiles XLA:CPU programs faster (the suite is compile-bound: 30% less
# time for two config tests measured side by side), at some run-time speed. Same XLA programs, so
# what the tests check (values, bit-equality between two runs) holds; the demo, the benchmarks
# and users keep XLA's default. Added to every process the suite starts (see run_python).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def with_test_flags(xla_flags: str) -> str:
  return xla_flags if TEST_XLA_FLAGS in xla_flags else f"{xla_flags} {TEST_XLA_FLAGS}".strip()


os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))

# One persistent XLA compilation cache for the whole test run (all xdist workers and the
# subprocesses they start): many tests compile the same tiny programs again (resume, 1 vs 8
# devices, configs), and a cache hit skips a 5-15 s compile. The key includes XLA_FLAGS, so a
# run with other flags never reuses an executable. Fresh per run: never a stale entry.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"kdjax_test_xla_cache_{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(tfds_dir: str, **overrides):
  """ResNet-18 at width 8 on 8 px digits, 4 steps: every code path, seconds to run."""
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import demo  # configs/demo.py

  c = demo.get_config("runlocal,arm=teacher")
  c.data.data_dir = tfds_dir
  c.data.load_size = 8
  c.data.image_size = 8
  c.model.width = 8
  c.batch_size = 16
  c.eval_batch_size = 32
  c.total_steps = 4
  c.log_every_steps = 1
  c.checkpoint_every_steps = 2
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  return c


TINY_TOTAL_STEPS = 12


def set_key(config, key: str, value) -> None:
  """config.<dotted key> = value (e.g. "teacher.adapt.model.name")."""
  *parents, leaf = key.split(".")
  for p in parents:
    config = config[p]
  config[leaf] = value


def throttled(cmd: list[str], what: str, seconds: float) -> list[str]:
  """`[python, "-m", module, ...]` run through tests/throttled.py, which pauses `seconds` after
  each unit of work `what` (train | cache | generate) so a test can signal it part-way."""
  assert cmd[1] == "-m", cmd
  return [cmd[0], os.path.join(os.path.dirname(os.path.abspath(__file__)), "throttled.py"),
          f"{what}={seconds}", *cmd[1:]]


def tiny_cli_args(tfds_dir: str, workdir, *extra: str) -> list[str]:
  """`python -m kdjax.main` arguments of the tests' tiny CLI run (ResNet-18 at width 8 on 8 px
  digits, 12 steps of 16, checkpoints at 4, 8, 12, evaluations at 6 and 12). One command for
  every CLI test, so they share its compiled programs through the compilation cache above."""
  return ["-m", "kdjax.main", "--config=configs/demo.py:runlocal", f"--workdir={workdir}",
          f"--config.data.data_dir={tfds_dir}", "--config.model.width=8",
          "--config.data.image_size=8", "--config.data.load_size=8",
          f"--config.total_steps={TINY_TOTAL_STEPS}", "--config.log_every_steps=1",
          "--config.checkpoint_every_steps=4", "--config.eval_every_steps=6",
          "--config.max_to_keep=20", *extra]


def snapshot(*roots) -> dict:
  """{path: (size, mtime_ns, sha1)} of every file under `roots`: equal before and after means
  nothing was written over."""
  import hashlib

  out = {}
  for root in roots:
    for parent, _, files in os.walk(root):
      for name in files:
        path = os.path.join(parent, name)
        with open(path, "rb") as f:
          digest = hashlib.sha1(f.read()).hexdigest()
        stat = os.stat(path)
        out[path] = (stat.st_size, stat.st_mtime_ns, digest)
  return out


def run_python(code_or_args, env_extra=None, timeout=600):
  """Runs `python -c code` (str) or `python args...` (list) from the repo root."""
  env = dict(os.environ, PYTHONPATH=REPO, **(env_extra or {}))
  env["XLA_FLAGS"] = with_test_flags(env.get("XLA_FLAGS", ""))
  args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_hub_resnet(tmp_path_factory):
  """A random HF ResNet-18-shaped checkpoint (basic blocks, depths 2-2-2-2, narrow), saved as
  a Hub checkpoint directory would be: config.json + model.safetensors, 5 ImageNet-like labels."""
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32],
                                     depths=[2, 2, 2, 2], layer_type="basic", num_labels=5)
  model = transformers.ResNetForImageClassification(config).eval()
  path = tmp_path_factory.mktemp("tiny_hub_resnet")
  model.save_pretrained(path)
  return str(path)
