"""notebooks/quickstart.ipynb runs headless, end to end, in its quick mode.

The kernel is this interpreter (a kernel spec written to a temporary directory names
sys.executable: no installed `python3` spec is needed, nor can another one be picked up) and
inherits this process's environment (conftest's XLA flags and compilation cache), plus the
notebook's switches: KDJAX_NOTEBOOK_QUICK=1 (tiny runs) and KDJAX_NOTEBOOK_WORKDIR (a temporary
directory). It starts in notebooks/, as Jupyter started in the checkout would.
"""

import base64
import json
import os
import sys

import nbformat
from conftest import REPO, with_test_flags
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")
ARMS = ("teacher", "scratch", "distill")
PROBE = ("import json, os, sys\n"
         "print('PROBE ' + json.dumps({'executable': sys.executable, 'cwd': os.getcwd(), 'env': {"
         "k: os.environ.get(k) for k in ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR', "
         "'TFDS_DATA_DIR')}}))")


def _outputs(cell, output_type=None):
  return [o for o in cell.get("outputs", []) if output_type in (None, o["output_type"])]


def _stdout(cell) -> str:
  return "".join(o["text"] for o in _outputs(cell, "stream") if o["name"] == "stdout")


def test_quickstart_notebook_runs(tmp_path, tfds_dir):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:  # committed without outputs
    assert not cell.get("outputs") and not cell.get("execution_count"), cell.get("id")
  nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="test-probe"))

  spec_dir = tmp_path / "kernels" / "kdjax-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "kdjax test", "language": "python"}))
  km = AsyncKernelManager(
      kernel_name="kdjax-test", connection_file=str(tmp_path / "connection.json"),
      kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
  workdir = tmp_path / "runs"
  xla_flags = with_test_flags(os.environ.get("XLA_FLAGS", ""))  # conftest: LLVM -O0
  env = dict(os.environ, KDJAX_NOTEBOOK_QUICK="1", KDJAX_NOTEBOOK_WORKDIR=str(workdir),
             TFDS_DATA_DIR=tfds_dir, XLA_FLAGS=xla_flags, IPYTHONDIR=str(tmp_path / "ipython"),
             MPLBACKEND="agg")  # the notebook's `%matplotlib inline` must win over this
  client = NotebookClient(nb, km=km, timeout=240, startup_timeout=60,
                          resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
  try:
    client.execute(env=env, cleanup_kc=True)  # raises CellExecutionError on any cell's error
  finally:  # what ran, with its outputs and timings, for a look after a failure
    nbformat.write(nb, tmp_path / "quickstart.executed.ipynb")

  cells = {cell.get("id"): cell for cell in nb.cells if cell.cell_type == "code"}
  assert not [c.get("id") for c in cells.values() if _outputs(c, "error")]

  probe = json.loads(_stdout(cells["test-probe"]).split("PROBE ", 1)[1])
  assert probe["executable"] == sys.executable
  assert os.path.samefile(probe["cwd"], REPO)  # the install cell found the checkout, went there
  assert probe["env"] == {"XLA_FLAGS": xla_flags, "TFDS_DATA_DIR": tfds_dir,
                          "JAX_COMPILATION_CACHE_DIR": os.environ["JAX_COMPILATION_CACHE_DIR"]}
  assert "nothing to install" in _stdout(cells["install"])
  assert "device(s)" in _stdout(cells["devices"])
  assert "QUICK MODE" in _stdout(cells["settings"])

  # the plot cell displayed a PNG (and saved it)
  pngs = [base64.b64decode(o["data"]["image/png"]) for o in _outputs(cells["plot"])
          if "image/png" in o.get("data", {})]
  assert len(pngs) == 1 and pngs[0].startswith(b"\x89PNG")
  assert (workdir / "quickstart.png").read_bytes().startswith(b"\x89PNG")

  # the table: one row per arm, with an accuracy
  table = [line for line in _stdout(cells["results"]).splitlines() if line.startswith("| ")]
  assert table[0].startswith("| arm | what | test accuracy")
  rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table[2:]}
  assert sorted(rows) == sorted(ARMS)
  assert rows["distill"][3] != "-"  # agreement with the teacher

  # every run wrote its directory: train losses, the test accuracy the table shows, checkpoints
  for arm in ARMS:
    lines = [json.loads(x) for x in (workdir / arm / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train/loss" in r] == [10, 20, 30, 40]
    accuracy = [r["test/accuracy"] for r in lines if "test/accuracy" in r]
    assert len(accuracy) == 1 and rows[arm][2] == f"{accuracy[0]:.4f}"
    assert (workdir / arm / "checkpoints" / "40").is_dir()
  assert "train/kd" in (workdir / "distill" / "metrics.jsonl").read_text()
