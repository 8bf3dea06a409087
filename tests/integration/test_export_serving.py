"""Export and serve: kdjax students trained from scratch (ResNet-18 with the ImageNet stem, which
transformers has, and with the CIFAR stem, which it has not) and an adapted teacher (a linear
probe of a tiny Hub ResNet) leave kdjax as a Hugging Face checkpoint (PyTorch is the oracle), as
StableHLO (reloaded in a process that never imports kdjax), as ONNX (onnxruntime) and through
`kdjax.predict`, which must reproduce each run's test accuracy exactly from image files.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from conftest import run_python, tiny_config
from PIL import Image

from kdjax import errors, export, predict
from kdjax.data import augment, sources
from kdjax.export import hf as hf_export
from kdjax.export import onnx as onnx_export
from kdjax.export import serving
from kdjax.hf import pretrained
from kdjax.models.students import mobilenet_v2, resnet
from kdjax.train import trainer

TOL = 1e-4
SIZE = 16


def _run(tmp_path_factory, tfds_dir, name, **overrides):
  workdir = tmp_path_factory.mktemp(name) / "run"
  config = tiny_config(tfds_dir, **{"data.load_size": SIZE, "data.image_size": SIZE,
                                    "optimizer.name": "adamw", "optimizer.learning_rate": 1e-2,
                                    "total_steps": 8, **overrides})
  metrics = trainer.train_and_evaluate(config, str(workdir)).metrics
  return workdir, metrics


@pytest.fixture(scope="module")
def student_run(tmp_path_factory, tfds_dir):
  """kdjax's ResNet-18 (ImageNet stem, width 8) trained from scratch: HF has its architecture."""
  return _run(tmp_path_factory, tfds_dir, "student", **{"model.stem": "imagenet"})


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, tfds_dir):
  """kdjax's ResNet-18 with the CIFAR stem: no transformers architecture (stablehlo and onnx)."""
  return _run(tmp_path_factory, tfds_dir, "cifar", **{"model.stem": "cifar"})


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, tfds_dir, tiny_hub_resnet):
  """An adapted teacher: a linear probe of a tiny Hub ResNet (frozen backbone read from it)."""
  return _run(tmp_path_factory, tfds_dir, "probe", **{
      "model.name": "hub", "model.pretrained": tiny_hub_resnet, "model.freeze_backbone": True})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """exported(workdir, fmt) -> (output directory, record): each run exported once per format."""
  cache = {}
  root = tmp_path_factory.mktemp("exports")

  def get(workdir, fmt):
    if (workdir, fmt) not in cache:
      out = root / f"{workdir.parent.name}_{fmt}"
      cache[workdir, fmt] = out, export.export(workdir, out, fmt)
    return cache[workdir, fmt]

  return get


@pytest.fixture(scope="module")
def test_images(student_run, tmp_path_factory):
  """The runs' test split as PNG files named by row, and its labels."""
  run = json.loads((student_run[0] / "config.json").read_text())
  data = ml_collections.ConfigDict(run["data"])
  source = sources.open_source(data, data.test_split)
  images, labels = source.read(np.arange(len(source)))
  directory = tmp_path_factory.mktemp("test_images")
  for i, im in enumerate(images):
    Image.fromarray(im).save(directory / f"{i:05d}.png")
  return directory, images, labels


def _run_logits(workdir, n: int):
  """(the run's servable, n random stored uint8 images, the run's logits on them)."""
  servable = serving.load(workdir)
  images = np.random.RandomState(0).randint(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
  return servable, images, np.asarray(jax.jit(servable.forward)(servable.variables, images)[0])


def _accuracy(results, labels) -> float:
  top1 = np.asarray([r["top"][0]["index"] for r in results])
  return float(np.mean(top1 == labels))


# ------------------------------------------------------------------------------ hf


def _randomise(variables, seed=0):
  """Every leaf random (batch-norm variances positive)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.RandomState(seed)
  out = [(rng.uniform(0.5, 2.0, leaf.shape) if jax.tree_util.keystr(path).endswith("['var']")
          else rng.normal(0, 0.3, leaf.shape)).astype(np.float32) for path, leaf in leaves]
  return jax.tree_util.tree_unflatten(tree, out)


@pytest.mark.parametrize("name, model, size", [
    ("resnet18", dict(name="resnet18", stem="imagenet", width=8), 32),
    ("resnet34", dict(name="resnet34", stem="imagenet", width=4), 32),
    ("mobilenet_v2", dict(name="mobilenet_v2", width_multiplier=0.35, cifar_strides=False,
                          dropout_rate=0.2), 32)])
def test_kdjax_student_maps_onto_the_transformers_model(name, model, size):
  """Random student variables, renamed and written as transformers' tensors, give the student's
  logits in PyTorch."""
  if name == "mobilenet_v2":
    module = mobilenet_v2.MobileNetV2(7, width_multiplier=model["width_multiplier"],
                                      cifar_strides=False)
  else:
    module = getattr(resnet, name)(7, stem="imagenet", width=model["width"])
  x = np.random.RandomState(1).normal(size=(2, size, size, 3)).astype(np.float32)
  variables = _randomise(jax.tree.map(np.asarray, module.init(jax.random.key(0), x)))
  family, config, hub_variables = export.student_as_hub(model, size, variables)
  config, architecture, hub_variables = family.hf_export(config, hub_variables)
  config = {**config, "architectures": [architecture], "num_labels": 7}
  layout = family.hf_layout(config, 7)
  tensors = export.hf_tensors(family, config, layout, hub_variables)
  torch_model = getattr(transformers, architecture)(
      transformers.AutoConfig.for_model(**config)).eval()
  torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
  logits = np.asarray(module.apply(variables, x)[0])
  assert np.abs(logits).max() > 0.1
  np.testing.assert_allclose(expected, logits, atol=TOL, rtol=0)


def test_a_cifar_stem_student_names_the_formats_that_work(cifar_run, tmp_path):
  workdir, _ = cifar_run
  out = tmp_path / "hf"
  with pytest.raises(errors.UserError, match="model.stem='cifar'.*no Hugging Face transformers "
                     "architecture.*--format=stablehlo.*--format=onnx"):
    export.export(workdir, out, "hf")
  assert not out.exists() and os.listdir(tmp_path) == []  # nor a temporary directory
  for model in (dict(name="resnet18", stem="cifar"), dict(name="mobilenet_v2", cifar_strides=True),
                dict(name="resnet8x4")):
    with pytest.raises(errors.UserError, match="no Hugging Face transformers architecture.*"
                       "--format=stablehlo.*--format=onnx"):
      export.student_as_hub(model, 32, {"params": {}})


@pytest.mark.parametrize("which", ["student_run", "probe_run"])
def test_hf_export_gives_the_runs_logits_in_pytorch_and_kdjax(which, request, exported):
  workdir, metrics = request.getfixturevalue(which)
  out, record = exported(workdir, "hf")
  _, images, logits = _run_logits(workdir, 4)
  assert np.abs(logits).max() > 0.05
  reloaded = pretrained.load(str(out))
  pixels = np.asarray(reloaded.preprocess(images))  # load_size == image_size: no resize
  with torch.no_grad():
    torch_model = transformers.AutoModelForImageClassification.from_pretrained(out).eval()
    torch_logits = torch_model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).logits
  assert type(torch_model).__name__ == record["architecture"] == "ResNetForImageClassification"
  np.testing.assert_allclose(torch_logits.numpy(), logits, atol=TOL, rtol=0)
  np.testing.assert_allclose(np.asarray(reloaded(pixels)["logits"]), logits, atol=TOL, rtol=0)
  saved = json.loads((out / "kdjax_export.json").read_text())
  assert saved == record and saved["format"] == "hf" and saved["step"] == 8
  assert saved["evaluation"]["test/accuracy"] == pytest.approx(metrics["test/accuracy"])


# ------------------------------------------------------------------------------ stablehlo

_RELOAD = """
import json, sys
import numpy as np
import jax
d, work = sys.argv[1], sys.argv[2]
spec = json.load(open(d + "/serving.json"))
data = np.load(work + "/inputs.npz")
out = {}
for dtype, x in (("uint8", data["images"]), ("float32", data["images"] / np.float32(255))):
  exported = jax.export.deserialize(bytearray(open(d + "/" + spec["files"][dtype], "rb").read()))
  for n in (1, len(x)):  # the batch dimension is symbolic
    logits, probs = exported.call(x[:n].astype(dtype))
    out[f"{dtype}_{n}"] = np.asarray(logits)
    assert np.allclose(np.asarray(probs).sum(-1), 1, atol=1e-5)
assert not [m for m in sys.modules if m.split(".")[0] == "kdjax"], "kdjax was imported"
try:
  import kdjax  # noqa: F401
  raise SystemExit("kdjax is importable here")
except ImportError:
  pass
np.savez(work + "/reloaded.npz", **out)
print("platforms", ",".join(exported.platforms), "shape", exported.in_avals[0].shape)
"""


@pytest.mark.parametrize("which", ["student_run", "cifar_run", "probe_run"])
def test_stablehlo_reloads_without_kdjax_to_the_runs_logits(which, request, exported, tmp_path):
  workdir, _ = request.getfixturevalue(which)
  out, record = exported(workdir, "stablehlo")
  servable, images, expected = _run_logits(workdir, 5)
  np.savez(tmp_path / "inputs.npz", images=images)
  # outside the repository, without PYTHONPATH: kdjax cannot even be imported there
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", _RELOAD, str(out), str(tmp_path)], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "platforms cpu,cuda shape (batch, 16, 16, 3)" in proc.stdout
  reloaded = np.load(tmp_path / "reloaded.npz")
  for n in (1, 5):
    np.testing.assert_allclose(reloaded[f"uint8_{n}"], expected[:n], atol=TOL, rtol=0)
    np.testing.assert_allclose(reloaded[f"float32_{n}"], expected[:n], atol=TOL, rtol=0)
  spec = json.loads((out / "serving.json").read_text())
  assert spec["input"]["shape"] == ["batch", SIZE, SIZE, 3]
  assert spec["class_names"] == servable.class_names and len(spec["class_names"]) == 10
  assert json.loads((out / "kdjax_export.json").read_text()) == record
  assert record["format"] == "stablehlo"
  assert sorted(os.listdir(out)) == ["kdjax_export.json", "model.float32.stablehlo",
                                     "model.uint8.stablehlo", "serving.json"]


# ------------------------------------------------------------------------------ onnx


@pytest.mark.parametrize("which", ["student_run", "cifar_run", "probe_run"])
def test_onnx_runs_in_onnxruntime_to_the_runs_logits(which, request, exported):
  workdir, _ = request.getfixturevalue(which)
  out, record = exported(workdir, "onnx")
  servable, images, expected = _run_logits(workdir, 5)
  for dtype, x in (("uint8", images), ("float32", images / np.float32(255))):
    session, spec = onnx_export.load(out, dtype)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"  # symbolic
    for n in (1, 5):
      logits, probs = session.run(["logits", "probabilities"], {"images": x[:n]})
      np.testing.assert_allclose(logits, expected[:n], atol=TOL, rtol=0, err_msg=dtype)
      np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
  assert spec["format"] == "onnx" and spec["class_names"] == servable.class_names
  assert record["format"] == "onnx"
  assert sorted(os.listdir(out)) == ["kdjax_export.json", "model.float32.onnx",
                                     "model.uint8.onnx", "serving.json"]


def test_onnx_converter_resizes_with_antialiasing_as_jax(tmp_path):
  """The eval view's resize (down and up, antialiased) converts to the same pixels: the runs above
  store images at their input size, so their graphs have no resize."""
  import onnxruntime

  convert = onnx_export._converter()
  x = np.random.RandomState(0).uniform(0, 255, (3, 21, 21, 3)).astype(np.float32)
  for size in (12, 32):
    fn = functools.partial(augment.resize, size=size)
    path = str(tmp_path / f"resize{size}.onnx")
    convert(fn, [jax.ShapeDtypeStruct(("batch", 21, 21, 3), np.float32)], return_mode="file",
            output_path=path, input_names=["x"], output_names=["y"])
    got = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, np.asarray(fn(x)), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------ predict


def test_predict_reproduces_the_runs_test_accuracy_from_every_format(
    student_run, cifar_run, probe_run, test_images, exported):
  directory, images, labels = test_images
  for workdir, metrics in (student_run, cifar_run, probe_run):
    name = workdir.parent.name
    formats = ("stablehlo", "onnx") + (("hf",) if name.startswith(("student", "probe")) else ())
    exports = {fmt: exported(workdir, fmt)[0] for fmt in formats}
    for model in (workdir, *exports.values()):
      results = predict.predict(str(model), [str(directory)], top_k=3, batch_size=128)
      assert [os.path.basename(r["file"]) for r in results] == sorted(os.listdir(directory))
      assert _accuracy(results, labels) == metrics["test/accuracy"], (name, model)
      probs = [t["probability"] for t in results[0]["top"]]
      assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert {t["class"] for r in results for t in r["top"]} <= set(
        serving.load(workdir).class_names)


def test_export_and_predict_command_lines(student_run, test_images, tmp_path):
  workdir, _ = student_run
  out = tmp_path / "shlo"
  proc = run_python(["-m", "kdjax.export", f"--workdir={workdir}", f"--out={out}",
                     "--format=stablehlo", "--platforms=cpu,tpu"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith(f"wrote {out} (stablehlo): resnet18, 10 classes, step 8")
  assert json.loads((out / "serving.json").read_text())["platforms"] == ["cpu", "tpu"]
  directory, _, _ = test_images
  files = sorted(os.listdir(directory))[:3]
  proc = run_python(["-m", "kdjax.predict", f"--model={out}", "--top_k=2",
                     f"--output={tmp_path / 'p.jsonl'}", *[str(directory / f) for f in files]])
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 3 and all(line.count(",") == 1 for line in lines), lines
  rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
  assert [r["file"] for r in rows] == [str(directory / f) for f in files]
  bad = run_python(["-m", "kdjax.predict", f"--model={tmp_path / 'none'}", str(directory)])
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "is not a directory" in bad.stderr


def test_stored_view_of_a_decoded_image():
  load = serving.load_settings({"load_size": 16, "load_resize": "square"}, (16, 16, 3))
  grey = np.random.RandomState(0).randint(0, 256, (40, 30)).astype(np.uint8)
  stored = serving.to_stored(grey, load)
  assert stored.shape == (16, 16, 3) and np.array_equal(stored[..., 0], stored[..., 2])
  same = np.random.RandomState(1).randint(0, 256, (16, 16, 3)).astype(np.uint8)
  assert np.array_equal(serving.to_stored(same, load), same)  # already stored: untouched
  with pytest.raises(errors.UserError, match="model takes"):
    serving.to_stored(grey, serving.load_settings({"load_size": None}, (8, 6, 3)))


def test_hf_export_of_a_run_without_checkpoint_names_the_fix(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  (tmp_path / "run" / "config.json").write_text(json.dumps(
      {"model": {"name": "resnet18", "stem": "imagenet"}, "data": {"image_size": 16}}))
  with pytest.raises(errors.UserError, match="no finished checkpoint"):
    hf_export.to_hf(tmp_path / "run", tmp_path / "out")
