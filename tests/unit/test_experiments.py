"""The paper reproduction scripts (experiments/paper_a.py, paper_b.py, plot_papers.py): fast checks,
no training. Every command the dry runs print parses into a locked config exactly as kdjax.main
parses it; the grids have the papers' sizes; collect reads the files a finished run writes
(kdjax/train/trainer.py: metrics.jsonl, cost.json) and puts our number next to the paper's; the plot
script writes a PNG from partial results."""

import io
import json
import os
import shlex
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "experiments"))

import paper_a  # noqa: E402
import paper_b  # noqa: E402
import paper_numbers  # noqa: E402

assert os.path.dirname(paper_a.__file__) == os.path.join(REPO, "experiments")  # not configs/


def _dry_run(module, root, *flags):
  out = io.StringIO()
  assert module.main(["run", f"--root={root}", "--dry_run", *flags], out=out) == 0
  text = out.getvalue()
  return text, [shlex.split(line)[3:] for line in text.splitlines()
                if line.startswith("python -m kdjax.main ")]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)  # the commands name configs/*.py from the repository root


def test_paper_a_dry_run_commands_load_as_kdjax_main_parses_them(tmp_path):
  root = str(tmp_path / "pa")
  text, commands = _dry_run(paper_a, root, "--seeds=0,1", "--set", "data.data_dir=/data/tfds")
  # adapt per (teacher, task) + per seed: 3 arms x 2 students x 6 tasks (distill: x 2 teachers)
  # + the 2 synthetic arms x 2 teachers x 2 students x 3 data-limited tasks
  assert len(commands) == 12 + 2 * (48 + 24)
  generate = [line for line in text.splitlines() if line.startswith("python -m kdjax.generate")]
  assert len(generate) == 3 and all("multiple=2,scheduler=pndm,steps=50" in g for g in generate)
  # --set data.* reaches the generation too (its config has the same data section)
  assert all(g.endswith("--config.data.data_dir=/data/tfds") for g in generate)
  assert "# [" in text and "images of Stable Diffusion at 512 px" in text
  assert "estimated total" in text
  configs = {}
  for args in commands:
    workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
    configs[os.path.basename(workdir)] = c = paper_a.load_config(args)
    assert c.data.data_dir == "/data/tfds"
  c = configs["distill_vit_b16_mobilenet_v2_cub200_s1"]
  assert c.seed == 1 and c.model.name == "mobilenet_v2" and c.data.name == "caltech_birds2011"
  assert c.teacher.models == os.path.join(root, "adapt_vit_b16_cub200")
  assert c.loss.kd_weight == c.loss.align_weight == c.loss.unif_weight == 1.0
  c = configs["adapt_resnet50_caltech101"]  # the teacher never trains on the held-out 20%
  assert (c.model.pretrained, c.model.freeze_backbone) == ("microsoft/resnet-50", True)
  assert (c.data.train_split, c.data.test_split, c.data.val_fraction) == ("train+test", "", 0.2)
  assert c.data.exclude_classes == ("background_google",)
  c = configs["finetune_resnet18_dtd_s0"]
  assert c.model.pretrained == "microsoft/resnet-18" and c.total_epochs == 250.0
  assert configs["scratch_mobilenet_v2_cifar100_s0"].loss.kd_weight == 0.0
  c = configs["distill_syn1x_vit_b16_resnet18_caltech101_s1"]
  assert c.data.synthetic == os.path.join(root, "synth_caltech101_2x")
  assert (c.data.synthetic_fraction, c.data.augment.kind) == (0.5, "rrc_flip_diffaug")
  assert configs["distill_syn2x_vit_b16_resnet18_dtd_s0"].data.synthetic_fraction == 1.0
  assert "distill_syn1x_resnet50_resnet18_cifar10_s0" not in configs  # data-limited tasks only
  # a mistyped override fails the way kdjax.main fails (the config is locked)
  with pytest.raises((KeyError, AttributeError)):
    paper_a.load_config(commands[0] + ["--config.data.dataa_dir=x"])


def test_paper_b_dry_run_commands_load_as_kdjax_main_parses_them(tmp_path):
  root = str(tmp_path / "pb")
  text, commands = _dry_run(paper_b, root, "--seeds=0", "--betas=1,10")
  # 5 teacher keys x 7 datasets adaptations; per (student, dataset): 3 strength arms x 6 sets
  # x 2 betas tuning runs, 1 stl + 3 x 6 final runs
  assert len(commands) == 35 + 2 * 7 * (36 + 1 + 18)
  configs = {}
  for args in commands:
    workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
    configs[os.path.basename(workdir)] = paper_a.load_config(args)
  c = configs["kd_dinov2_g+clip_g_resnet50_food101_s0"]
  assert c.teacher.models == ",".join(os.path.join(root, f"adapt_{k}_food101")
                                      for k in ("dinov2_g", "clip_g"))
  assert (c.teacher.mode, c.data.test_split, c.data.val_fraction) == ("cached", "validation", 0)
  assert c.loss.kd_weight == 10.0  # beta not tuned yet: the dry run shows 10
  assert "the best on validation of [1.0, 10.0] once tuned (10 shown)" in text
  c = configs["adapt_clip_g_food101"]  # the students' hold-out, official test split
  assert (c.data.val_fraction, c.data.test_split) == (0.1, "validation")
  c = configs["tune_aft_dinov2_l_vit_s_pets_b1"]  # tuning: 90% of train, validation only
  assert (c.loss.aft_weight, c.teacher.models, c.data.name) == (
      1.0, "facebook/dinov2-large", "oxford_iiit_pet")
  assert (c.data.val_fraction, c.data.test_split, c.seed) == (0.1, "", 0)
  c = configs["aft_dinov2_l_vit_s_aircraft_s0"]  # final: the whole training split, test
  assert (c.data.name, c.data.train_split, c.data.val_fraction, c.data.test_split) == (
      "fgvc_aircraft", "trainval", 0.0, "test")
  assert configs["stl_vit_s_dtd_s0"].teacher.models == ""
  # one teacher cache per (teachers, student, dataset, training rows), shared by the arms
  cache = os.path.join(root, "teacher_cache_clip_h_resnet50_cifar100_full")
  assert configs["aft_clip_h_resnet50_cifar100_s0"].teacher.cache_dir == cache
  assert configs["feature_kd_clip_h_resnet50_cifar100_s0"].teacher.cache_dir == cache
  assert len({c.teacher.cache_dir for c in configs.values()}) == 1 + 6 * 2 * 7 * 2 * 2


def test_grids_have_the_papers_sizes_and_respect_filters(tmp_path):
  root = str(tmp_path)
  steps = paper_a.plan(root)
  arms = [s.cell[3] for s in steps]
  assert len(steps) == len({s.cell for s in steps}) == 60 + 3 + 24  # one seed: a run per cell
  assert [arms.count(a) for a in ("teacher", "distill", "scratch", "finetune", "synthetic",
                                  "distill_syn1x", "distill_syn2x")] == [12, 24, 12, 12, 3, 12, 12]
  names = [s.name for s in steps]
  for s in steps:  # an adapted teacher comes before every run that reads it
    assert all(names.index(os.path.basename(n)) < names.index(s.name) for n in s.needs)
  small = paper_a.plan(root, ["resnet50"], None, ["dtd"], ["distill"], seeds=(0, 1, 2))
  assert [s.name for s in small] == ["adapt_resnet50_dtd"] + [
      f"distill_resnet50_{s}_dtd_s{i}" for s in ("resnet18", "mobilenet_v2") for i in range(3)]
  assert [s.name for s in paper_a.plan(root, arms=["scratch"], tasks=["dtd"])] == [
      "scratch_resnet18_dtd_s0", "scratch_mobilenet_v2_dtd_s0"]  # no teacher: no adaptation
  synth = paper_a.plan(root, ["resnet50"], ["resnet18"], ["dtd", "cifar10"], ["distill_syn2x"])
  assert [s.name for s in synth] == ["adapt_resnet50_dtd", "synth_dtd_2x",
                                     "distill_syn2x_resnet50_resnet18_dtd_s0"]
  assert synth[1].module == "kdjax.generate" and set(synth[2].needs) == {
      synth[0].workdir, synth[1].workdir}

  steps = paper_b.plan(root)
  arms = [s.cell[3] for s in steps]
  assert len(steps) == len({s.cell for s in steps}) == 35 + 2 * 7 * (3 * 6 * 5 + 1 + 3 * 6)
  assert [arms.count(a) for a in ("teacher", "stl", "aft", "feature_kd", "kd")] == [
      35, 14, 84, 84, 84]  # 5 teacher keys x 7 datasets; 6 teacher sets x 2 students x 7
  assert arms.count("tune:aft:b0.3") == 84 and "aft_no_kernel" not in arms
  assert len(paper_b.plan(root, arms=["aft", "feature_kd", "stl"], betas=(1.0,))) == 14 * 25
  # every default cell has an entry in the papers' numbers: None (not reported), or a number
  # with the table it is read from
  for module, lookup in ((paper_a, paper_numbers.paper_a), (paper_b, paper_numbers.paper_b)):
    for s in module.plan(root):
      value, source = lookup(*s.cell)
      assert (value is None or isinstance(value, float)) and source


def _finished_run(workdir, accuracy, split="test", step=1000, wall=7200.0, finished=True,
                  mid=None):
  """The files kdjax/train/trainer.py writes: config.json, metrics.jsonl (train rows, the final
  evaluation, the cost record) and, once done, cost.json."""
  os.makedirs(os.path.join(workdir, "checkpoints", str(step)), exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"seed": 0}, f)
  rows = [{"step": 50, "train/loss": 2.0, "steps_per_s": 3.0, "images_per_s": 192.0,
           "epoch": 0.1},
          {"step": step // 2, f"{split}/accuracy": accuracy / 2 if mid is None else mid,
           f"{split}/loss": 1.5,
           f"{split}/count": 1880},
          {"step": step, f"{split}/accuracy": accuracy, f"{split}/loss": 0.5,
           f"{split}/count": 1880}]
  cost = {"wall_time_s": wall, "train_flops": 1e15, "eval_flops": 1e13,
          "flops_per_train_step": 1e12, "total_flops": 1.01e15}
  if finished:
    rows.append({"step": step, **{f"cost/{k}": v for k, v in cost.items()}})
    with open(os.path.join(workdir, "cost.json"), "w") as f:
      json.dump(cost, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))


def test_collect_puts_our_number_next_to_the_papers(tmp_path, monkeypatch):
  root = str(tmp_path / "pa")
  _finished_run(f"{root}/distill_resnet50_resnet18_dtd_s0", 0.60, mid=0.64)
  _finished_run(f"{root}/distill_resnet50_resnet18_dtd_s1", 0.62)
  _finished_run(f"{root}/scratch_resnet18_caltech101_s0", 0.7123, split="val")
  _finished_run(f"{root}/scratch_resnet18_caltech101_s1", 0.70, split="val")
  _finished_run(f"{root}/finetune_resnet18_dtd_s0", 0.9, step=5000, finished=False)
  monkeypatch.setitem(paper_numbers.A_DISTILL, ("resnet50", "resnet18", "dtd"),
                      (63.5, "Table 9 (test fixture)"))
  out = io.StringIO()
  assert paper_a.main(["collect", f"--root={root}", "--teachers=resnet50",
                       "--students=resnet18", "--tasks=dtd,caltech101", "--seeds=0,1",
                       "--arms=distill,scratch,finetune"],
                      out=out) == 0
  assert "2 of 8 cells have results" in out.getvalue()
  with open(f"{root}/results.json") as f:
    result = json.load(f)
  cells = {(c["teacher"], c["student"], c["data"], c["arm"]): c for c in result["cells"]}
  assert len(cells) == 8  # (adapt, distill, scratch, finetune) x 2 tasks
  distill = cells[("resnet50", "resnet18", "dtd", "distill")]
  # mean and 95% interval (Student's t, 1 degree of freedom: 12.706 x s / sqrt(2)) of the
  # final accuracies, and of each run's best evaluation (the references' metric)
  assert distill["ours"] == pytest.approx(61.0)
  assert distill["ours_ci95"] == pytest.approx(12.706 * 1.41421 / 1.41421, rel=1e-3)
  assert distill["ours_best"] == pytest.approx(63.0)
  assert (distill["paper"], distill["paper_source"]) == (63.5, "Table 9 (test fixture)")
  assert distill["seeds"] == [0, 1] and distill["wall_time_h"] == pytest.approx(2.0)
  scratch = cells[(None, "resnet18", "caltech101", "scratch")]
  assert scratch["split"] == "val" and scratch["ours"] == pytest.approx(70.615)
  finetune = cells[(None, "resnet18", "dtd", "finetune")]
  assert finetune["ours"] is None and finetune["status"] == "incomplete (step 5000)"
  assert cells[("resnet50", None, "dtd", "teacher")]["status"] == "not run"
  run = next(r for r in result["runs"] if r["name"] == "distill_resnet50_resnet18_dtd_s0")
  assert (run["status"], run["accuracy"], run["eval_step"], run["count"]) == (
      "finished", 0.60, 1000, 1880)
  assert (run["best_accuracy"], run["best_step"]) == (0.64, 500)
  with open(f"{root}/results.md") as f:
    table = f.read()
  assert ("| dtd | resnet18 | resnet50 | distill | 61.00 ± 12.71 (2 seeds) | 63.00 ± 12.71 "
          "(2 seeds) | 63.50 | Table 9 (test fixture) | 2.00 |") in table
  assert "| caltech101 | resnet18 | - | scratch | 70.62 ± 7.81 (2 seeds) (val) |" in table
  assert ("| dtd | resnet18 | - | finetune | incomplete (step 5000) | incomplete (step 5000) | "
          "not reported") in table
  assert "94% less training time" in table  # the abstract's claim, quoted with its source


def test_run_skips_finished_steps_and_waits_for_the_adapted_teacher(tmp_path):
  root = str(tmp_path)
  steps = paper_a.plan(root, ["resnet50"], ["resnet18"], ["dtd"],
                       ["distill", "scratch", "finetune"], seeds=(0,))
  assert [s.name for s in steps] == ["adapt_resnet50_dtd", "distill_resnet50_resnet18_dtd_s0",
                                     "scratch_resnet18_dtd_s0", "finetune_resnet18_dtd_s0"]
  _finished_run(steps[2].workdir, 0.5)
  calls = []

  def runner(step, log_path):
    calls.append(step.name)
    if step.name.startswith("adapt"):
      return 1  # the teacher's adaptation fails: its distillation must not start
    _finished_run(step.workdir, 0.5)
    return 0

  out = io.StringIO()
  failed = paper_a.execute(steps, root, keep_going=True, runner=runner, out=out)
  assert calls == ["adapt_resnet50_dtd", "finetune_resnet18_dtd_s0"]
  assert failed == ["adapt_resnet50_dtd", "distill_resnet50_resnet18_dtd_s0"]
  assert "scratch_resnet18_dtd_s0: finished, skipped" in out.getvalue()
  calls.clear()
  assert paper_a.execute(steps, root, runner=runner, out=io.StringIO()) == ["adapt_resnet50_dtd"]
  assert calls == ["adapt_resnet50_dtd"]  # without --keep_going: stops at the first failure


def test_estimate_from_the_configs(tmp_path):
  step = paper_a.plan(str(tmp_path), ["resnet50"], ["resnet18"], ["cifar10"], ["distill"])[1]
  est = paper_a.estimate(step)
  assert est["steps"] == 250 * (50000 // 64)
  per_image = 3 * 3.64 + 8.03  # student forward + backward, the online teacher's forward
  # the test split every epoch (the student), the teacher's predictions once (kept)
  evals = 250 * 10000 * 3.64 + 10000 * 8.03
  assert est["flops"] == pytest.approx((est["steps"] * 64 * per_image + evals) * 1e9, rel=0.01)
  # paper B: the first run of a shared teacher cache pays for it (45,000 images), not the next
  aft, feature_kd = paper_b.plan(str(tmp_path), ["dinov2_l"], ["vit_s"], ["cifar10"],
                                 ["aft", "feature_kd"], betas=(1.0,))[:2]
  first, second = paper_a.estimate(aft), paper_a.estimate(feature_kd, cache_made=True)
  # DINOv2-L at the reference's 518 px (37 x 37 patches, not 16 x 16): 6.3x its 224 px forward
  assert paper_a.forward_gflops("facebook/dinov2-large", 518) == pytest.approx(
      paper_a._vit_gflops(1024, 24, 4096, 14, 518))
  assert paper_a.forward_gflops("facebook/dinov2-large", 518) == pytest.approx(
      6.26 * paper_a.forward_gflops("facebook/dinov2-large"), rel=0.01)
  assert first["flops"] - second["flops"] == pytest.approx(
      45000 * paper_a.forward_gflops("facebook/dinov2-large", 518) * 1e9, rel=0.01)

  # the ViT formula against XLA's count of kdjax's ports (experiments/results/teachers_cpu_b8)
  assert paper_a._vit_gflops(768, 12, 3072, 16) == pytest.approx(35.68, rel=0.03)
  assert paper_a._vit_gflops(768, 12, 3072, 14) == pytest.approx(47.07, rel=0.03)


def test_plot_writes_a_png_from_partial_results(tmp_path, monkeypatch):
  import plot_papers

  monkeypatch.setitem(paper_numbers.B_AFT, ("dinov2_l", "vit_s", "pets"), (88.0, "test fixture"))
  results = []
  for module, name, flags in (
      (paper_a, "distill_resnet50_resnet18_dtd_s0", ["--teachers=resnet50", "--tasks=dtd,cifar10"]),
      (paper_b, "aft_dinov2_l_vit_s_pets_s0", ["--teachers=dinov2_l,dinov2_g+clip_g",
                                               "--students=vit_s", "--datasets=pets,cifar10"])):
    root = str(tmp_path / module.__name__)
    _finished_run(os.path.join(root, name), 0.61)
    assert module.main(["collect", f"--root={root}", *flags], out=io.StringIO()) == 0
    results.append(os.path.join(root, "results.json"))
  drawn = plot_papers.main(results)
  # paper A: a panel per student; B: per (student, teacher set); the one finished run drawn once
  assert [(d["panels"], d["bars"], d["paper_markers"]) for d in drawn] == [(2, 1, 0), (2, 1, 1)]
  for d in drawn:
    assert d["path"] == os.path.splitext(results[drawn.index(d)])[0] + ".png"
    with open(d["path"], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  empty = {"paper": "B", "root": "r", "metric": "", "cells": [], "runs": [], "claims": []}
  assert plot_papers.plot(empty, str(tmp_path / "empty.png"))["panels"] == 1


def test_paper_b_final_runs_take_the_beta_chosen_on_validation(tmp_path):
  """The reference's order: tuning runs on the validation hold-out, then the final run with
  the best beta (the smallest on a tie); `collect` reports it. A final run waits for its
  tuning."""
  root = str(tmp_path)
  steps = paper_b.plan(root, ["dinov2_l"], ["vit_s"], ["pets"], ["aft"], seeds=(0,),
                       betas=(1.0, 3.0, 10.0))
  assert [s.name for s in steps] == [f"tune_aft_dinov2_l_vit_s_pets_b{b}" for b in (1, 3, 10)] + [
      "aft_dinov2_l_vit_s_pets_s0"]
  final = steps[-1]
  calls = []

  def runner(step, log_path):
    calls.append(step.config)
    _finished_run(step.workdir, 0.5)
    return 0

  assert paper_a.execute([final], root, runner=runner, out=io.StringIO()) == [final.name]
  assert calls == []  # its tuning has not finished
  for step, acc in zip(steps[:3], (0.80, 0.86, 0.86)):
    _finished_run(step.workdir, acc, split="val")
  assert paper_a.chosen_beta(final) == (3.0, {1.0: 0.80, 3.0: 0.86, 10.0: 0.86})
  assert paper_a.execute([final], root, runner=runner, out=io.StringIO()) == []
  assert calls == [final.config.replace("{beta}", "3")] and ",beta=3,val=0" in calls[0]
  out = io.StringIO()
  assert paper_b.main(["collect", f"--root={root}", "--teachers=dinov2_l", "--students=vit_s",
                       "--datasets=pets", "--arms=aft", "--seeds=0", "--betas=1,3,10"],
                      out=out) == 0
  with open(os.path.join(root, "results.json")) as f:
    cells = {c["arm"]: c for c in json.load(f)["cells"]}
  assert cells["aft"]["beta"] == 3.0 and cells["tune:aft:b3"]["split"] == "val"


def test_collect_reads_a_finished_synthetic_set(tmp_path):
  """A generated set is finished by its dataset_info.json (kdjax.generate writes no
  cost.json): collect lists it without a result."""
  root = str(tmp_path)
  os.makedirs(os.path.join(root, "synth_dtd_2x"))
  with open(os.path.join(root, "synth_dtd_2x", "dataset_info.json"), "w") as f:
    f.write("{}")
  assert paper_a.main(["collect", f"--root={root}", "--teachers=resnet50", "--students=resnet18",
                       "--tasks=dtd", "--arms=distill_syn2x", "--seeds=0"],
                      out=io.StringIO()) == 0
  with open(os.path.join(root, "results.json")) as f:
    run = next(r for r in json.load(f)["runs"] if r["name"] == "synth_dtd_2x")
  assert run["status"] == "finished" and "accuracy" not in run
