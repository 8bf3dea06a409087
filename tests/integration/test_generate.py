"""The synthetic-data stage (kdjax/generate/) on a tiny randomly initialised Stable Diffusion
built here (tiny UNet, VAE, CLIP text encoder, a byte-level tokenizer vocabulary): prompts and
labels from the real dataset's class names, TFDS output read back, training on the mix, and a
generation killed part-way then resumed."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, throttled, tiny_config

SHARD = 8
PER_CLASS = 4  # 40 images, 5 shards


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
  from kdjax.generate import random_pipeline
  return str(random_pipeline.save_random_pipeline(tmp_path_factory.mktemp("tiny_sd"), "tiny"))


def synth_config(tfds_dir, pipeline, **overrides):
  sys.path.insert(0, os.path.join(REPO, "configs", "synth"))
  import digits  # configs/synth/digits.py

  c = digits.get_config(f"images_per_class={PER_CLASS}")
  c.data.data_dir = tfds_dir
  c.synth.pipeline = pipeline
  c.synth.shard_size = SHARD
  c.synth.batch_per_device = 4
  for k, v in overrides.items():
    c.synth[k] = v
  return c


@pytest.fixture(scope="module")
def generated(tfds_dir, tiny_sd, tmp_path_factory):
  from kdjax.generate import run
  out = tmp_path_factory.mktemp("synth")
  report = run.generate(synth_config(tfds_dir, tiny_sd), str(out))
  return str(out), report


def read_all(directory):
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(directory)
  ds = builder.as_data_source(split="train")
  return builder, [ds[i] for i in range(len(ds))]


def test_generated_dataset_reads_back_through_tfds_with_labels_prompts_and_seeds(
    generated, tfds_dir, tiny_sd):
  from kdjax.generate import plan
  directory, report = generated
  builder, examples = read_all(directory)
  names = [str(i) for i in range(10)]
  assert builder.info.features["label"].names == names  # kdjax_digits' ClassLabel names
  assert builder.info.splits["train"].shard_lengths == [SHARD] * 5
  assert len(examples) == report["num_images"] == 10 * PER_CLASS
  templates = ("a handwritten digit {c}", "the number {c}")
  for k, ex in enumerate(examples):  # classes interleaved; n-th image of a class: template n % 2
    label, n = k % 10, k // 10
    assert ex["index"] == k and ex["label"] == label
    assert ex["prompt"].decode() == templates[n % 2].format(c=names[label])
    assert ex["seed"] == plan.image_seed(0, k)
    assert ex["image"].shape == (8, 8, 3) and ex["image"].dtype == np.uint8  # the real size
  images = np.stack([ex["image"] for ex in examples]).astype(np.float32)
  assert images.std(axis=0).mean() > 5  # different seeds give different images
  assert report["flops_per_image"] > 0 and report["images_per_s"] > 0


def test_an_image_depends_only_on_its_prompt_and_seed(generated, tiny_sd):
  """Image k regenerated alone (batch of 1, other batch mates) from its stored prompt and seed
  equals the stored one: the seed column reproduces the dataset."""
  import jax

  from kdjax.generate import pipeline, sampler
  directory, _ = generated
  _, examples = read_all(directory)
  cfg = synth_config("", tiny_sd).synth
  pipe = pipeline.load_pipeline(pipeline.resolve(tiny_sd, None), cfg.scheduler, cfg.dtype)
  sample = jax.jit(sampler.make_sampler(pipe, cfg, 8))
  picks = [3, 17, 38]
  ids = pipeline.tokenize(pipe, [examples[k]["prompt"].decode() for k in picks])
  negative = pipeline.tokenize(pipe, [""])
  seeds = np.asarray([examples[k]["seed"] for k in picks], np.int32)
  again = np.asarray(sample(pipe.params, ids, negative, seeds))
  for j, k in enumerate(picks):
    diff = np.abs(again[j].astype(int) - examples[k]["image"].astype(int))
    assert diff.max() <= 1, (k, diff.max())  # PNG is lossless; 1: float rounding at .5


def test_training_runs_on_real_plus_synthetic_rows(generated, tfds_dir, tmp_path):
  from kdjax.data import pipeline
  from kdjax.train import trainer
  directory, _ = generated
  config = tiny_config(tfds_dir, **{"data.synthetic": directory})
  real = pipeline.build(tiny_config(tfds_dir).data, _mesh(), 0, 16, 32).train
  mixed = pipeline.build(config.data, _mesh(), 0, 16, 32)
  assert mixed.train.num_examples == real.num_examples + 10 * PER_CLASS
  synth_rows = mixed.train.rows[real.num_examples:]
  images, labels = mixed.train.source.read(synth_rows)
  _, examples = read_all(directory)
  np.testing.assert_array_equal(labels, [ex["label"] for ex in examples])
  np.testing.assert_array_equal(images, np.stack([ex["image"] for ex in examples]))

  result = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(result.state.step) == config.total_steps
  assert np.isfinite(result.metrics["test/loss"])


def test_unlabelled_synthetic_rows_skip_cross_entropy(generated, tfds_dir):
  from kdjax.data import pipeline
  directory, _ = generated
  cfg = tiny_config(tfds_dir, **{"data.synthetic": directory, "data.synthetic_labels": False,
                                 "data.synthetic_per_class": 2}).data
  train = pipeline.build(cfg, _mesh(), 0, 16, 32).train
  n_real = len(train.rows) - 20
  _, labels = train.source.read(train.rows)
  assert (labels[:n_real] >= 0).all() and (labels[n_real:] == -1).all()

  import jax.numpy as jnp

  from kdjax import steps
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(6, 10)), jnp.float32)
  label = jnp.asarray([1, -1, 3, -1, -1, 9])
  ce = steps.cross_entropy(logits[jnp.asarray([0, 2, 5])], label[jnp.asarray([0, 2, 5])], 10)
  got = _ce_of_step(logits, label)
  np.testing.assert_allclose(got, float(ce.mean()), rtol=1e-6)


def test_killed_generation_resumes_without_duplicates_or_losses(generated, tfds_dir, tiny_sd,
                                                               tmp_path):
  """A 2-process run (`--distributed`, 2 localhost processes, jax.distributed with gloo: each
  computes half of every global batch of 8, process 0 writes; run through tests/throttled.py,
  which pauses after each batch) is SIGKILLed after its second batch (two shards) is logged;
  the directory is not a dataset yet; a shard corrupted on disk is regenerated and a killed
  writer's temporary file removed; the resume, in one process, ends equal to the uninterrupted
  one-process run: images depend on prompt and seed only, not on batch, device or process
  count."""
  import socket

  import tensorflow_datasets as tfds

  reference, _ = generated
  work = tmp_path / "killed"
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  cmd = throttled([sys.executable, "-m", "kdjax.generate", "--config=configs/synth/digits.py:"
                   f"images_per_class={PER_CLASS}", f"--workdir={work}",
                   f"--config.synth.pipeline={tiny_sd}", f"--config.data.data_dir={tfds_dir}",
                   f"--config.synth.shard_size={SHARD}", "--config.synth.batch_per_device=4",
                   "--distributed"], "generate", 0.5)
  procs = [subprocess.Popen(
      cmd, cwd=REPO, stderr=subprocess.PIPE if i == 0 else subprocess.DEVNULL, text=True,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))) for i in range(2)]
  seen = []
  try:
    for line in procs[0].stderr:
      seen.append(line)
      if "generated 16/40 images" in line:
        assert "global batch 8 on 2 devices" in "".join(seen)
        for p in procs:
          p.send_signal(signal.SIGKILL)
        break
  finally:
    for p in procs:
      p.kill()
      p.wait()
  assert any("generated 16/40" in line for line in seen), "".join(seen)[-3000:]
  shards = sorted(work.glob("*.array_record-*"))
  assert 1 <= len(shards) < 5, [s.name for s in shards]  # killed part-way
  assert not (work / "dataset_info.json").exists()
  with pytest.raises(OSError, match="dataset info"):  # a partial run is not a dataset
    tfds.builder_from_directory(str(work))
  kept = {s.name: s.stat().st_ino for s in shards[1:]}
  shards[0].write_bytes(shards[0].read_bytes()[:100])  # a shard corrupted on disk
  from kdjax import files
  from kdjax.generate import plan, run
  # A killed writer's leftover: kdjax.files.tmp_name's format, with the killed process's pid.
  (work / f".{shards[1].name}.{files.HOST}.{procs[0].pid}.{'0' * 32}.tmp").write_bytes(b"half")
  report = run.generate(synth_config(tfds_dir, tiny_sd), str(work))
  assert report["generated_this_run"] == 40 - SHARD * len(kept)
  assert {s.name: s.stat().st_ino for s in work.glob("*.array_record-*")
          if s.name in kept} == kept  # finished shards kept, not rewritten
  assert not list(work.glob(".*tmp*"))
  _, resumed = read_all(str(work))
  _, uninterrupted = read_all(reference)
  assert [ex["index"] for ex in resumed] == list(range(40))  # each once, none missing
  for a, b in zip(resumed, uninterrupted):
    assert (a["label"], a["prompt"], a["seed"]) == (b["label"], b["prompt"], b["seed"])
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).max() <= 1

  other = synth_config(tfds_dir, tiny_sd, guidance_scale=3.0)
  with pytest.raises(plan.GenerateError, match="different setup.*guidance_scale"):
    run.generate(other, str(work))
  assert json.loads((work / "generate.json").read_text())["guidance_scale"] == 7.5


def test_offline_hub_miss_names_the_download_command(monkeypatch):
  from kdjax import errors
  from kdjax.generate import pipeline
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
  with pytest.raises(errors.TeacherLoadError,
                     match="hf download CompVis/stable-diffusion-v1-4 --include "
                           "'model_index.json' .*'vae/diffusion_flax_model.msgpack' "
                           "--revision bf16"):
    pipeline.resolve("CompVis/stable-diffusion-v1-4", "bf16")


def _mesh():
  from kdjax import sharding
  return sharding.make_mesh()


def _ce_of_step(logits, label):
  """The train step's CE with partial labels, through a one-parameter 'model'."""
  import flax.linen as nn
  import jax
  import ml_collections
  import optax

  from kdjax import steps

  class Fixed(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      b = self.param("b", nn.initializers.zeros, ())
      return logits + b, {"pre_logits": logits}

  model, tx = Fixed(), optax.sgd(0.0)
  state = steps.create_train_state(model, tx, (1,), jax.random.key(0))
  cfg = ml_collections.ConfigDict({"ce_weight": 1.0, "label_smoothing": 0.0})
  step = steps.make_train_step(model, tx, cfg, 10, partial_labels=True)
  _, metrics = step(state, {"image": np.zeros((6, 1)), "label": label}, jax.random.key(0), {})
  return float(metrics["ce"])


@pytest.mark.parametrize("scheduler", ["dpm_multistep"])
def test_sampler_matches_diffusers_own_flax_pipeline(tiny_sd, scheduler):
  """Independent reference: diffusers 0.39's FlaxStableDiffusionPipeline._generate (its
  pmap-free core) from the same initial latents gives the same images."""
  import jax
  import ml_collections

  from kdjax.generate import pipeline, sampler
  diffusers = pipeline.diffusers  # imported with its deprecation notices silenced
  pipe = pipeline.load_pipeline(pipeline.resolve(tiny_sd, None), scheduler, "float32")
  cfg = ml_collections.ConfigDict({"resolution": 16, "num_inference_steps": 5,
                                   "guidance_scale": 7.5, "resize_method": "lanczos3"})
  ids = pipeline.tokenize(pipe, ["a handwritten digit 3", "the number 7"])
  seeds = np.asarray([11, 12], np.int32)
  ours = np.asarray(jax.jit(sampler.make_sampler(pipe, cfg, 16))(
      pipe.params, ids, pipeline.tokenize(pipe, [""]), seeds))
  reference = diffusers.FlaxStableDiffusionPipeline(
      vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
      scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None)
  latents = jax.vmap(lambda s: jax.random.normal(jax.random.key(s), (4, 8, 8)))(seeds)
  generate_jit = jax.jit(reference._generate, static_argnums=(3, 4, 5, 6))
  theirs = generate_jit(ids, pipe.params, None, 5, 16, 16, 7.5, latents)
  theirs = np.round(np.asarray(theirs) * 255).astype(int)
  assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_plan_counts_follow_the_real_training_selection(tfds_dir):
  from kdjax.generate import plan as plan_lib
  c = synth_config(tfds_dir, "unused")
  c.synth.images_per_class = 0
  c.synth.multiple = 2.0
  c.synth.exclude_classes = ("7",)
  c.data.n_per_class = 3  # the trainer's data-limited selection: 3 real images per digit
  names, real_counts, size = plan_lib.real_dataset(c)
  counts = plan_lib.class_counts(c, names, real_counts)
  assert size == 8 and list(real_counts) == [3] * 10
  assert list(counts) == [6] * 7 + [0] + [6] * 2
  plan = plan_lib.make_plan(names, counts, ("{c} texture",), 0, {"9": "nine"})
  assert len(plan) == 54 and 7 not in plan.labels
  assert plan.prompts[:3] == ["0 texture", "1 texture", "2 texture"]
  assert plan.prompts[8] == "nine texture"
  assert len(set(plan.seeds.tolist())) == 54


@pytest.mark.parametrize("task", ["dtd", "caltech101"])
def test_paper_a_synth_configs_name_real_classes(task):
  """Renamed and excluded labels exist in the task's TFDS ClassLabel names (a typo would
  silently leave a class with an unreadable prompt), and the prompts are the paper's."""
  import importlib.util

  import tensorflow_datasets as tfds
  spec = importlib.util.spec_from_file_location("synth_paper_a", os.path.join(
      REPO, "configs", "synth", "paper_a.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"task={task},multiple=2")
  names = tfds.builder(c.data.name, data_dir="/nonexistent").info.features["label"].names
  from kdjax.generate import plan
  assert set(plan.parse_rename(c.synth.rename)) <= set(names)
  assert set(c.synth.exclude_classes) <= set(names)
  assert c.synth.templates == {"dtd": ("{c} texture",),
                               "caltech101": ("a picture of a {c}",)}[task]
  assert c.synth.multiple == 2 and c.data.train_split.startswith("train")

