"""Starting from a Hub checkpoint: teacher linear probe / fine-tune and pre-trained students, and
paper A's one command (teacher.adapt: adapt the teacher into WORKDIR/teacher, then distil).

The checkpoint is a tiny random HF ResNet saved by the test (tests/conftest.py); the probe's
output must equal an independent computation: frozen features (pretrained.load without head)
times the trained head.
"""

import copy
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python, set_key, snapshot, tiny_config

from kdjax import checkpoint, configlib, errors, validate
from kdjax.hf import pretrained
from kdjax.train import adapt, trainer
from kdjax.train import workdir as workdir_lib


def _config(tfds_dir, pretrained, **overrides):
  return tiny_config(tfds_dir, **{"model.pretrained": pretrained, "model.name": "hub",
                                  "data.load_size": 16, "data.image_size": 16,
                                  "optimizer.name": "adamw", "optimizer.learning_rate": 1e-2,
                                  **overrides})


def test_linear_probe_trains_only_the_head_and_becomes_a_teacher(tfds_dir, tiny_hub_resnet,
                                                                 tmp_path):
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.freeze_backbone": True})
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert set(result.state.params) == {"classifier"} and not result.state.batch_stats
  # Only the head is checkpointed: the frozen backbone is rebuilt from its source.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 3)
  saved = ckpt.saved_structure(ckpt.latest_step())
  ckpt.close()
  assert set(saved["params"]) == {"classifier"} and not saved["batch_stats"]
  # The exact source is recorded, so the head meets the backbone it was trained on.
  record = json.loads((tmp_path / "pretrained.json").read_text())
  assert record == {"source": tiny_hub_resnet, "hub": False, "revision": None}
  # The run records the checkpoint's normalisation (no preprocessor file: ImageNet's).
  run = json.loads((tmp_path / "config.json").read_text())
  assert run["data"]["mean"] == [0.485, 0.456, 0.406]

  adapted = pretrained.load(str(tmp_path))  # the workdir is a teacher now
  head = result.state.params["classifier"]
  assert float(jnp.abs(head["kernel"]).max()) > 0  # the probe learned something
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  features = pretrained.load(tiny_hub_resnet, num_classes=0)(x)["features"]
  expected = features @ head["kernel"] + head["bias"]
  out = adapted(x)
  assert out["logits"].shape == (3, 10)  # kdjax_digits has 10 classes
  np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
  assert adapted.image_size == (16, 16)


def test_fine_tune_scales_the_backbone_learning_rate(tfds_dir, tiny_hub_resnet, tmp_path):
  source = pretrained.load(tiny_hub_resnet, num_classes=0).variables
  kernel = lambda params: np.asarray(params["stages_1_layers_0"]["layer0"]["conv"]["kernel"])  # noqa: E731
  frozen = trainer.train_and_evaluate(
      _config(tfds_dir, tiny_hub_resnet, **{"optimizer.backbone_lr_scale": 0.0}),
      str(tmp_path / "scale0")).state
  np.testing.assert_array_equal(kernel(frozen.params["backbone"]), kernel(source["params"]))
  assert float(jnp.abs(frozen.params["classifier"]["kernel"]).max()) > 0
  # BatchNorm statistics still follow the task's data in train mode.
  assert not np.allclose(frozen.batch_stats["backbone"]["embedder"]["bn"]["mean"],
                         source["batch_stats"]["embedder"]["bn"]["mean"])
  tuned = trainer.train_and_evaluate(_config(tfds_dir, tiny_hub_resnet),
                                   str(tmp_path / "scale1")).state
  assert not np.allclose(kernel(tuned.params["backbone"]), kernel(source["params"]))


def test_pretrained_student_must_match_its_name(tfds_dir, tiny_hub_resnet, tmp_path):
  # The tiny checkpoint has ResNet-18's blocks (basic, 2-2-2-2): accepted as resnet18 ...
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.name": "resnet18", "total_steps": 1})
  assert int(trainer.train_and_evaluate(config, str(tmp_path / "ok")).state.step) == 1
  # ... but it is not a ResNet-34 or a MobileNetV2.
  for name in ("resnet34", "mobilenet_v2"):
    with pytest.raises(ValueError, match=f"is not a '{name}'.*'hub'.*\\['resnet18'\\]"):
      trainer.train_and_evaluate(_config(tfds_dir, tiny_hub_resnet, **{"model.name": name}),
                               str(tmp_path / name))
  with pytest.raises(ValueError, match="freeze_backbone=True needs model.pretrained"):
    trainer.train_and_evaluate(_config(tfds_dir, "", **{"model.name": "resnet18",
                                                      "model.freeze_backbone": True}),
                             str(tmp_path / "bad"))


def test_cli_names_the_fix_for_a_missing_teacher(tmp_path):
  from conftest import run_python

  proc = run_python(["-m", "kdjax.main", "--config=configs/adapt.py:runlocal",
                     f"--config.model.pretrained={tmp_path / 'absent'}",
                     f"--workdir={tmp_path / 'run'}"])
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"error: teacher '{tmp_path / 'absent'}': no such directory" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_fsdp_frozen_backbone_trains_like_a_replicated_one(tfds_dir, tiny_hub_resnet, tmp_path):
  """8 fake devices: the probe's frozen backbone split over the devices (FSDP) or replicated
  gives the same head: XLA gathers the shards where the forward pass needs them. Both runs in one
  8-device process (tests/train_worker.py's main, once per mode)."""
  from conftest import REPO, run_python

  from kdjax import runtime

  env = {"XLA_FLAGS": runtime.with_cpu_flags("--xla_force_host_platform_device_count=8")}
  modes = ("replicate", "fsdp")
  runs = []
  for mode in modes:
    overrides = {"model.pretrained": tiny_hub_resnet, "model.name": "hub",
                 "model.freeze_backbone": True, "model.param_sharding": mode,
                 "model.fsdp_min_size": 512, "data.load_size": 16, "data.image_size": 16,
                 "optimizer.name": "adamw", "optimizer.learning_rate": 1e-2, "total_steps": 2}
    runs.append((tfds_dir, str(tmp_path / mode), str(tmp_path / f"{mode}.npz"),
                  json.dumps(overrides)))
  proc = run_python(f"import sys; sys.path.insert(0, {REPO + '/tests'!r}); import train_worker\n"
                    f"for args in {runs!r}: train_worker.main(*args)", env_extra=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  heads = {}
  for mode in modes:
    assert json.loads((tmp_path / f"{mode}.npz.json").read_text())["devices"] == 8
    heads[mode] = dict(np.load(tmp_path / f"{mode}.npz"))
  assert heads["fsdp"].keys() == heads["replicate"].keys()
  for key in heads["fsdp"]:
    np.testing.assert_allclose(heads["fsdp"][key], heads["replicate"][key], atol=1e-6)
  # Written by 8 devices, read here on 1: an adapted teacher moves between machines.
  teacher = pretrained.load(str(tmp_path / "fsdp"))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  features = pretrained.load(tiny_hub_resnet, num_classes=0)(x)["features"]
  kernel, bias = (heads["fsdp"][f"['params']['classifier']['{k}']"] for k in ("kernel", "bias"))
  np.testing.assert_allclose(teacher(x)["logits"], features @ kernel + bias, atol=1e-5)


def test_probe_resumes_exactly(tfds_dir, tiny_hub_resnet, tmp_path):
  """Frozen backbone outside the state: a resumed probe ends where an uninterrupted one does."""
  config = _config(tfds_dir, tiny_hub_resnet, **{"model.freeze_backbone": True,
                                                  "checkpoint_every_steps": 2})
  whole = trainer.train_and_evaluate(config, str(tmp_path / "whole")).state
  trainer.train_and_evaluate(config, str(tmp_path / "cut"))
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "4")  # as if killed after step 2's save
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "cut")).state
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def _one_command_config(tfds_dir, source, **overrides):
  """tiny_config's student distilled (KD + alignment + uniformity) from `source`, adapted to the
  task by a linear probe in the same command: teacher.adapt, configlib.adapt_config's recipe on
  the student's data at 16 px, 4 steps; its data.data_dir empty (the student's)."""
  c = tiny_config(tfds_dir, **{"loss.kd_weight": 1.0, "loss.align_weight": 1.0,
                               "loss.unif_weight": 1.0, **overrides})
  run = configlib.adapt_config(source, "probe")
  run.data = copy.deepcopy(c.data)
  run.data.update({"data_dir": "", "load_size": 16, "image_size": 16, "normalization": "auto"})
  run.update({"batch_size": 16, "eval_batch_size": 32, "total_epochs": None, "total_steps": 4,
              "log_every_steps": 1, "eval_every_steps": None, "checkpoint_every_steps": 2})
  run.optimizer.learning_rate = 1e-2
  c.teacher.adapt = run
  c.lock()  # as kdjax.main passes it
  return c


def test_one_command_adapts_the_teacher_then_distils_and_skips_it_when_finished(
    tfds_dir, tiny_hub_resnet, tmp_path):
  workdir = tmp_path / "run"
  config = _one_command_config(tfds_dir, tiny_hub_resnet)
  result = adapt.train_and_evaluate(config, str(workdir))
  teacher = workdir / "teacher"
  # 1. the adaptation: an ordinary, finished run directory (a probe of the tiny checkpoint)
  assert (teacher / "cost.json").is_file()
  run = json.loads((teacher / "config.json").read_text())
  assert run["model"]["pretrained"] == tiny_hub_resnet and run["model"]["freeze_backbone"]
  assert run["data"]["data_dir"] == tfds_dir  # the student's, its own left empty
  assert sorted(os.listdir(teacher / "checkpoints")) == ["2", "4"]
  # 2. its record in the distillation run
  record = json.loads((workdir / "adapt.json").read_text())
  assert record["teacher_dir"] == str(teacher) and record["mode"] == "probe"
  assert record["source"] == {"source": tiny_hub_resnet, "hub": False, "revision": None}
  assert record["step"] == 4 and 0 <= record["final"]["test/accuracy"] <= 1
  # 3. the distillation, from WORKDIR/teacher (its config keeps the adaptation's)
  assert int(result.state.step) == 4 and 0 <= result.metrics["test/teacher_accuracy"] <= 1
  used = json.loads((workdir / "teachers.json").read_text())
  assert [(r["source"], r["step"]) for r in used] == [(str(teacher.resolve()), 4)]
  distil = json.loads((workdir / "config.json").read_text())
  assert distil["teacher"]["models"] == str(teacher)
  assert distil["teacher"]["adapt"]["model"]["pretrained"] == tiny_hub_resnet

  # Killed after the distillation's step-2 checkpoint; run again (the workdir spelt otherwise):
  # the finished adaptation is not trained again (nothing in it changes), the distillation
  # resumes from step 2 and finishes.
  shutil.rmtree(workdir / "checkpoints" / "4")
  os.remove(workdir / "cost.json")
  before = snapshot(teacher)
  again = adapt.train_and_evaluate(config, str(tmp_path / "." / "run"))
  assert snapshot(teacher) == before
  assert int(again.state.step) == 4 and (workdir / "cost.json").is_file()
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]  # 3, 4 redone once

  # Another student config (a seed: the same programs): refused before anything is written (the
  # adaptation too) ...
  other = _one_command_config(tfds_dir, tiny_hub_resnet, seed=1)
  before = snapshot(workdir)
  with pytest.raises(errors.UserError, match="holds a run of a different config.*--overwrite"):
    adapt.train_and_evaluate(other, str(workdir))
  assert snapshot(workdir) == before
  # ... and with overwrite the distillation starts again while the same adaptation is kept.
  adapt.train_and_evaluate(other, str(workdir), overwrite=True)
  assert snapshot(teacher) == {k: v for k, v in before.items() if k.startswith(f"{teacher}/")}
  assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_one_command_offline_names_the_missing_input_and_writes_nothing(tfds_dir,
                                                                        tiny_hub_resnet,
                                                                        tmp_path):
  """The real command line, without network and with an empty HF cache: the first missing
  input (the Hub teacher, then the dataset) is refused in one line, exit status 2, before
  WORKDIR (its teacher/ and config.json) exists."""
  workdir = tmp_path / "run"
  env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf_home")}
  base = ["-m", "kdjax.main", "--config=configs/resnet18_cifar.py:runlocal",
          f"--workdir={workdir}", f"--config.data.data_dir={tfds_dir}"]
  for extra, wanted in [
      ([], ["error: teacher 'microsoft/resnet-50' is not in the HF cache", "HF_HUB_OFFLINE=1",
            "hf download microsoft/resnet-50", "teacher_dir=DIR"]),
      ([f"--config.teacher.adapt.model.pretrained={tiny_hub_resnet}"],  # the data next
       ["error: dataset 'cifar10' split 'train' is not prepared", "tfds build cifar10"])]:
    proc = run_python(base + extra, env_extra=env)
    assert proc.returncode == errors.EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert all(w in line for w in wanted), line
    assert not workdir.exists()


def test_adapt_keys_are_checked_before_anything_runs(tfds_dir, tiny_hub_resnet):
  config = _one_command_config(tfds_dir, tiny_hub_resnet)
  assert validate.adapting(config)
  validate.check(adapt.distillation_config(config, "W/teacher"))
  with pytest.raises(errors.UserError, match="trainer does not adapt teachers.*kdjax.main"):
    validate.check(config)  # the trainer alone, given the one command's config
  bad = copy.deepcopy(config)
  bad.teacher.models = "/some/adapted/teacher"
  with pytest.raises(errors.UserError, match="both set.*teacher_dir=DIR"):
    validate.adapting(bad)
  cases = [("data.val_fraction", 0.2, "teacher.adapt.data.val_fraction=0.1 but "
                                       "data.val_fraction=0.2: the teacher adapts on the "
                                       "student's task"),
           ("teacher.adapt.batch_size", 0, "teacher.adapt (the teacher's adaptation run): "
                                           "batch_size=0: must be > 0"),
           ("teacher.adapt.model.pretrained", "", "teacher.adapt.model.pretrained is empty"),
           ("teacher.adapt.loss.kd_weight", 1.0, "teacher.adapt (the teacher's adaptation "
                                                 "run): loss terms ['kd'] need teachers"),
           ("teacher.models", "W/a,W/b", "teacher.models='W/a,W/b' with teacher.adapt: one")]
  for key, value, message in cases:
    bad = adapt.distillation_config(config, "W/teacher")
    set_key(bad, key, value)
    with pytest.raises(errors.UserError) as info:
      validate.check(bad)
    assert str(info.value).startswith(message), str(info.value)


def test_resume_check_of_the_adaptation_keys(tfds_dir, tiny_hub_resnet):
  """A distillation run with teacher.adapt resumes with other logging keys of the adaptation and
  another spelling of its workdir (teacher.models: always WORKDIR/teacher); another adaptation is
  another run."""
  flat = lambda c: configlib.flatten(json.loads(c.to_json_best_effort()))  # noqa: E731
  config = _one_command_config(tfds_dir, tiny_hub_resnet)
  mine = flat(adapt.distillation_config(config, "runs/x/teacher"))
  theirs = dict(mine, **{"teacher.models": "/abs/runs/x/teacher",
                         "teacher.adapt.log_every_steps": 7,
                         "teacher.adapt.checkpoint_every_steps": 9})
  assert workdir_lib.differences(theirs, mine) == []
  theirs["teacher.adapt.optimizer.learning_rate"] = 0.5
  assert workdir_lib.differences(theirs, mine) == [
      ("teacher.adapt.optimizer.learning_rate", 0.5, 1e-2)]
  plain = flat(tiny_config(tfds_dir, **{"teacher.models": "a"}))  # no adaptation: compared
  assert workdir_lib.differences(dict(plain, **{"teacher.models": "b"}), plain) == [
      ("teacher.models", "b", "a")]
