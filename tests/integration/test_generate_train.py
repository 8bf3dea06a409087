"""The generator's training (kdjax/generate/train.py, experiments/train_tiny_diffusion.py) on
the embedded MNIST-5k corpus at its smallest: the denoising loss falls, a run killed part-way
resumes to the uninterrupted run's bits, another config is refused, and the written directory is
a pipeline `kdjax.generate` loads and samples from."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, with_test_flags

UNET_STEPS = 24


def gen_config(tfds_dir, **gen):
  from kdjax.tools import transfer
  c = transfer.generator_config("runlocal")
  c.data.data_dir = tfds_dir
  c.gen.unet_steps = UNET_STEPS
  for k, v in gen.items():
    c.gen[k] = v
  return c


@pytest.fixture(scope="module")
def trained(tfds_dir, tmp_path_factory):
  from kdjax.generate import train
  work = tmp_path_factory.mktemp("generator")
  return str(work), train.train(gen_config(tfds_dir), str(work))


def _weights(directory):
  return {part: (directory / part / name).read_bytes() for part, name in (
      ("unet", "diffusion_flax_model.msgpack"), ("vae", "diffusion_flax_model.msgpack"),
      ("text_encoder", "flax_model.msgpack"))}


def test_training_lowers_the_losses_and_records_its_cost(trained):
  _, report = trained
  unet = [h["mse"] for h in report["unet"]["history"]]
  assert len(unet) == UNET_STEPS // 2  # logged every 2 steps
  assert np.mean(unet[-3:]) < 0.85 * np.mean(unet[:3]), unet
  vae = [h["recon_mse"] for h in report["vae"]["history"]]
  assert vae[-1] < vae[0], vae
  assert report["vae"]["scaling_factor"] > 0
  for stage in ("vae", "unet"):
    assert report[stage]["flops_per_step"] > 0 and report[stage]["wall_time_s"] > 0
  assert report["flops"] == pytest.approx(sum(report[s]["flops_per_step"] * report[s]["steps"]
                                              for s in ("vae", "unet")))
  # the text encoder trains with the UNet: its caption states move
  cond = report["conditioning"]
  assert report["text_encoder"] == "trained with the UNet"
  assert 0 < cond["initial"]["min_class_distance_rel"] < cond["initial"]["mean_class_distance_rel"]
  assert cond["trained"] != cond["initial"]
  assert report["captions"][7] == ["a handwritten digit 7", "the number 7"]


def test_captions_tokenize_as_the_written_tokenizer_does(trained):
  import transformers

  from kdjax.generate import random_pipeline, train
  work, _ = trained
  tok = transformers.CLIPTokenizer.from_pretrained(os.path.join(work, "pipeline", "tokenizer"))
  prompts = ["a handwritten digit 7", "the number 0", "", "x" * 40]
  want = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
             return_tensors="np").input_ids
  got = train.tokenize(random_pipeline.byte_vocab(), prompts, tok.model_max_length)
  np.testing.assert_array_equal(got, want)


def test_killed_training_resumes_to_the_uninterrupted_weights(trained, tfds_dir, tmp_path,
                                                              caplog):
  """experiments/train_tiny_diffusion.py SIGKILLed in the UNet stage (after its step-2
  checkpoint), then the same training again (in this process): the pipeline's weights equal the
  uninterrupted run's, byte for byte."""
  from pathlib import Path

  from kdjax.generate import train
  work = tmp_path / "killed"
  cmd = [sys.executable, os.path.join(REPO, "tests", "throttled.py"), "diffusion=0.15",
         os.path.join(REPO, "experiments", "train_tiny_diffusion.py"),
         "--config=configs/synth/tiny_diffusion.py:runlocal",
         f"--config.data.data_dir={tfds_dir}", f"--config.gen.unet_steps={UNET_STEPS}",
         f"--workdir={work}"]
  env = dict(os.environ, PYTHONPATH=REPO)
  env["XLA_FLAGS"] = with_test_flags(env.get("XLA_FLAGS", ""))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while not (work / "unet" / "2").is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  out = proc.communicate()[0]
  assert (work / "unet" / "2").is_dir(), out[-3000:]
  assert not (work / "report.json").exists()  # killed part-way
  with caplog.at_level("INFO"):
    train.train(gen_config(tfds_dir), str(work))
  assert "unet: resumed at step" in caplog.text
  assert _weights(work / "pipeline") == _weights(Path(trained[0]) / "pipeline")


def test_another_config_in_the_same_workdir_is_refused(trained, tfds_dir):
  from kdjax.generate import train
  with pytest.raises(train.TrainError, match="another config.*gen.unet_learning_rate"):
    train.train(gen_config(tfds_dir, unet_learning_rate=3e-4), trained[0])


def test_the_written_pipeline_generates_labelled_images(trained, tfds_dir, tmp_path):
  from kdjax.generate import quality, run
  from kdjax.tools import transfer
  c = transfer.synth_config(str(tmp_path / "root"), 5, 0, runlocal=True)
  c.data.data_dir = tfds_dir
  c.synth.pipeline = os.path.join(trained[0], "pipeline")
  out = tmp_path / "synthetic"
  report = run.generate(c, str(out))
  images, labels, names = quality.read(out)
  assert names == [str(i) for i in range(10)]
  assert report["num_images"] == len(images) == 100  # 2x the 5 labelled images per class
  np.testing.assert_array_equal(np.bincount(labels), [10] * 10)
  assert images.shape[1:] == (8, 8, 3) and images.dtype == np.uint8  # T's stored size
  assert images.std(axis=0).mean() > 1  # seeds draw different images
  path = quality.grid(out, tmp_path / "grid.png", per_class=3, scale=2)
  from PIL import Image
  assert Image.open(path).size == (3 * 8 * 2, 10 * 8 * 2)
