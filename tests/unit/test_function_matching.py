"""experiments/function_matching.py's plan, without training (a smoke run of 2 arms takes about
a minute on 2 cores): the arms' configs validate and differ only where the arm says (everything
else equal, the miniature's student and teacher), and the summary's paired verdicts on made-up
records."""

import importlib.util
import json
import os

import pytest
from absl import app
from conftest import REPO

from kdjax import configlib, validate


def _load():
  path = os.path.join(REPO, "experiments", "function_matching.py")
  spec = importlib.util.spec_from_file_location("fm_experiment", path)  # not configs/'s
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


fm = _load()


def _flat(config) -> dict:
  return configlib.flatten(json.loads(config.to_json_best_effort()))


def test_arms_and_their_selection():
  views = ["1", "2", "4", "8", "32"]
  assert fm.arms(views) == ["online", "online_mixup", "cached_1", "cached_2", "cached_4",
                            "cached_8", "cached_32"]
  assert fm.arms(views, ["cached_8", "online"]) == ["online", "cached_8"]
  with pytest.raises(app.UsageError, match="cached_3"):
    fm.arms(views, ["cached_3"])


def test_arms_differ_only_where_they_say():
  configs = {arm: fm.arm_config(arm, 1, "/t", "/c", 500)
             for arm in fm.arms(["1", "32"])}
  base = _flat(configs["online"])
  assert base["teacher.cache_views"] == 1  # the default: cached_1 leaves it as it is
  expected = {"online_mixup": {"data.augment.mixup_alpha"},
              "cached_1": {"teacher.mode", "teacher.cache_dir"},
              "cached_32": {"teacher.mode", "teacher.cache_views", "teacher.cache_dir"}}
  for arm, config in configs.items():
    validate.check(config)
    flat = _flat(config)
    assert {k for k in base if flat.get(k) != base[k]} == expected.get(arm, set()), arm
  c = configs["online"]
  # function matching's loss: KL at T=1, no labels; the miniature's student run
  assert (c.loss.ce_weight, c.loss.kd_weight, c.loss.kd_temperature) == (0.0, 1.0, 1.0)
  assert (c.total_steps, c.seed, c.teacher.models, c.teacher.mode) == (500, 1, "/t", "online")
  assert (c.data.augment.kind, tuple(c.data.augment.scale), c.data.augment.flip) == (
      "rrc_flip", (0.25, 1.0), False)
  assert configs["online_mixup"].data.augment.mixup_alpha == 1.0
  assert (configs["cached_32"].teacher.cache_views, configs["cached_32"].teacher.cache_dir) == (
      32, os.path.join("/c", "cached_32"))
  demo = configlib.load_file(os.path.join(REPO, "configs", "demo.py"))
  student = _flat(demo.get_config("arm=kd,teacher_dir=/t"))
  same = ("model.name", "model.width", "data.name", "data.n_per_class", "data.image_size",
          "batch_size", "optimizer.name", "optimizer.learning_rate")
  assert {k: base[k] for k in same} == {k: student[k] for k in same}
  seeds = [_flat(fm.arm_config("online", s, "/t", "/c", 500)) for s in (0, 1)]
  assert {k for k in seeds[0] if seeds[0][k] != seeds[1][k]} == {"seed"}
  # the teacher is the miniature's (experiments/miniature.py: configs/demo.py:arm=teacher)
  assert _flat(fm.teacher_config()) == _flat(demo.get_config("arm=teacher"))
  assert fm.teacher_config(2).total_steps == 2


def _record(arm, seed, accuracy, kl):
  return {"arm": arm, "seed": seed, "test_accuracy": accuracy, "kl": kl, "agreement": accuracy,
          "agreement_top5": 1.0, "total_train_flops": 1.0, "wall_time_s": 1.0}


def test_summary_pairs_seeds_and_the_verdict_names_the_smallest_trusted_k():
  online = [0.98, 0.97, 0.99]
  runs = [_record("online", s, a, 0.05) for s, a in enumerate(online)]
  runs += [_record("cached_1", s, a - 0.2 - 0.01 * s, 0.8) for s, a in enumerate(online)]
  runs += [_record("cached_8", s, a - 0.01 + 0.01 * s, 0.05 + 0.01 * (s - 1))
           for s, a in enumerate(online)]
  runs += [_record("cached_32", s, a + 0.01 * (s - 1), 0.05 - 0.01 * (s - 1))
           for s, a in enumerate(online)]
  summary = fm.summarise(runs)
  assert summary["cached_1"]["verdict"] == summary["cached_1"]["kl_verdict"] == "worse"
  assert summary["cached_1"]["minus_online"]["differences"] == pytest.approx(
      [-0.2, -0.21, -0.22])
  assert summary["cached_8"]["verdict"] == summary["cached_32"]["verdict"] == "no effect"
  assert fm.verdict(summary).startswith("from K = 8 views per image")
  assert "K = 1: accuracy worse, KL worse" in fm.verdict(summary)
  summary["cached_8"]["verdict"] = "better"  # better than online is not worse: still trusted
  assert fm.verdict(summary).startswith("from K = 8 views per image")
  summary["cached_32"]["kl_verdict"] = "worse"  # the largest K is worse: none is trusted
  assert fm.verdict(summary).startswith("no K of [1, 8, 32] is as good as online teaching")
  assert "| cached_8 |" in fm.table(summary)
  one_seed = fm.summarise([r for r in runs if r["seed"] == 0])
  assert "verdict" not in one_seed["cached_1"]
  assert fm.verdict(one_seed) == "too few seeds paired with `online` for a verdict"
