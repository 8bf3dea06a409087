r"""The transfer miniature, all of it: pre-training on P, publishing, probes, every arm x size x
seed, then tables (mean, 95% interval, per seed, paired differences), costs, claims, JSON, plot.

  python experiments/transfer.py --workdir=runs/transfer --out=experiments/results/transfer

The setting, its networks and arms: kdjax/tools/transfer.py (configs/transfer.py runs any one
stage).
Resumable: finished runs are read back, an interrupted one resumes from its checkpoint.
`--dry_run` prints every stage's command without running anything.
"""

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# after the path: the script runs from a checkout
from kdjax import stats  # noqa: E402
from kdjax.tools import transfer  # noqa: E402

FLAGS = flags.FLAGS

CLAIMS = [
    # (paper, the paper's statement, arm, baseline)
    ("A", "distilling a pre-trained teacher beats training the student from scratch",
     "distill", "scratch"),
    ("A", "a distilled student reaches or beats the same student pre-trained and fine-tuned",
     "distill", "finetune"),
    ("A", "extra unlabelled task inputs help the distillation", "distill_unlabelled", "distill"),
    ("A", "(investigation) a teacher fine-tuned on T instead of probed", "distill_tuned",
     "distill"),
    ("A", "(investigation) distilled from the fine-tuned teacher vs pre-trained + fine-tuned",
     "distill_tuned", "finetune"),
    ("A", "(KD alone, for reference) KD from the probed teacher vs scratch", "kd", "scratch"),
    ("A", "synthetic images (1x, labelled by prompt) help the distilled student",
     "distill_syn1x", "distill"),
    ("A", "synthetic images (2x, labelled by prompt) help the distilled student",
     "distill_syn2x", "distill"),
    ("A", "synthetic images without labels (2x) help the distilled student", "distill_synu",
     "distill"),
    ("A", "(control) synthetic images (1x, labelled) help the student trained alone (CE)",
     "scratch_syn1x", "scratch"),
    ("A", "(control) synthetic images (2x, labelled) help the student trained alone (CE)",
     "scratch_syn2x", "scratch"),
    ("A", "with 2x synthetic images, distilling beats training alone", "distill_syn2x",
     "scratch_syn2x"),
    ("A", "(investigation) 10x synthetic images (labelled) for the distilled student",
     "distill_syn10x", "distill"),
    ("A", "(investigation) 10x synthetic images (labelled) for the student trained alone",
     "scratch_syn10x", "scratch"),
    ("A", "(investigation) 10x against 2x synthetic images, distilled", "distill_syn10x",
     "distill_syn2x"),
    ("A", "(investigation) T's real unlabelled remainder (343 / 193 images) against the 2x "
     "synthetic set unlabelled (100 / 400)", "distill_unlabelled", "distill_synu"),
    ("B", "AFT beats fine-tuning the pre-trained model (STL)", "aft", "finetune"),
    ("B", "AFT beats KD on the pre-trained model (its KD baseline: feature regression)", "aft",
     "feature_kd"),
    ("B", "a stronger pre-trained teacher gives a better student (ResNet vs ViT features)",
     "aft", "aft_weak"),
    ("B", "several teachers at once are at least as good as the best one", "aft_both", "aft"),
    ("B", "(investigation) AFT vs STL when the teacher saw 4x the student's P images",
     "aft_p25", "finetune_p25"),
]


def _commands(root: str, sizes, seeds, arms) -> list[str]:
  nets, probes = transfer.needed(arms)
  config = "configs/transfer.py"
  lines = [f"# root {root}: networks {nets}, probes {probes}"]
  for name in nets:
    lines.append(f"python -m kdjax.main --config={config}:stage=pretrain_{name},root={root} "
                 f"--workdir={transfer.run_dir(root, f'pretrain_{name}')}")
    lines.append(f"python -m kdjax.export --workdir={transfer.run_dir(root, f'pretrain_{name}')}"
                 f" --out={transfer.paths(root)['published'] / name}")
  synthetic = sorted({transfer.synthetic_set(a) for a in arms if a in transfer.SYNTHETIC_ARMS})
  if synthetic:
    lines.append("python experiments/train_tiny_diffusion.py "
                 f"--config=configs/synth/tiny_diffusion.py "
                 f"--workdir={transfer.paths(root)['generator']}")
  for n in sizes:
    for seed in seeds:
      for m in synthetic:
        lines.append(f"# synthetic set {m}x n={n} seed={seed}: kdjax.generate with "
                     f"transfer.synth_config(root, {n}, {seed}, multiple={m}) -> "
                     f"{transfer.synthetic_dir(root, n, seed, m)}")
      for stage in [*probes, *arms]:
        lines.append(f"python -m kdjax.main --config={config}:stage={stage},n_per_class={n},"
                     f"seed={seed},root={root} --workdir={transfer.run_dir(root, stage, n, seed)}")
  return lines


def _cpu() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags_ = info.get("Flags", "").split()
    isa = "AVX-512" if "avx512f" in flags_ else ("AVX2" if "avx2" in flags_ else "no AVX2")
    return f"{info.get('Model name', '?').strip()} ({isa}), {os.cpu_count()} cores"
  except (OSError, subprocess.CalledProcessError, ValueError):
    return f"{platform.processor() or '?'}, {os.cpu_count()} cores"


def costs(result: dict, arms, sizes) -> dict:
  """(n, arm) -> FLOPs and seconds of what the arm pays: its run (+ teacher cache), its probes
  on T, and the student's pre-training on P where it starts from it. The teachers' own
  pre-training on P is the publisher's, paid once (reported apart)."""
  pre = result["pretrain"]
  generation = {}  # (n, set multiple) -> [(FLOPs, seconds) of each seed's synthetic set]
  for r in result.get("synthetic", []):
    g = r["generation"]
    generation.setdefault((r["n_per_class"], r.get("multiple", transfer.SYNTH_MULTIPLE)),
                          []).append((r["generation_flops"], g.get("wall_time_s", 0.0)))
  probe = {}
  for r in result["probes"]:
    probe.setdefault((r["n_per_class"], r["stage"]), []).append(r)
  runs = {}
  for r in result["runs"]:
    runs.setdefault((r["n_per_class"], r["stage"]), []).append(r)
  out = {}
  for n in sizes:
    for arm in arms:
      rs = runs.get((n, arm), [])
      if not rs:
        continue
      mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
      own_f, own_s = mean(rs, "total_flops"), mean(rs, "wall_time_s")
      probe_f = probe_s = 0.0
      for source in transfer.ARMS[arm][1]:  # the teacher's adaptation to T
        if source.startswith(("probe_", "tune_")) and probe.get((n, source)):
          probe_f += mean(probe[(n, source)], "total_flops")
          probe_s += mean(probe[(n, source)], "wall_time_s")
      pre_f = pre_s = 0.0
      student = transfer.pretrained_student(arm)
      if student:
        pre_f, pre_s = pre[student]["total_flops"], pre[student]["wall_time_s"]
      gen_f = gen_s = 0.0
      have = generation.get((n, transfer.synthetic_set(arm))) if (
          arm in transfer.SYNTHETIC_ARMS) else None
      if have:
        # the share of the generated set the arm reads (1x: half of the 2x set)
        share = transfer.SYNTHETIC_ARMS[arm][2] / transfer.synthetic_set(arm)
        gen_f = share * float(np.mean([f for f, _ in have]))
        gen_s = share * float(np.mean([t for _, t in have]))
      out[(n, arm)] = {"run_flops": own_f, "run_s": own_s, "probe_flops": probe_f,
                       "probe_s": probe_s, "student_pretrain_flops": pre_f,
                       "student_pretrain_s": pre_s, "generation_flops": gen_f,
                       "generation_s": gen_s, "total_flops": own_f + probe_f + pre_f + gen_f,
                       "total_s": own_s + probe_s + pre_s + gen_s}
  return out


def _pm(mean, half, digits=4) -> str:
  return f"{mean:.{digits}f} ± {half:.{digits}f}" if half is not None else f"{mean:.{digits}f}"


def _diff(d) -> str:
  if d is None:
    return "-"
  return f"{_pm(100 * d['mean'], None if d['ci95'] is None else 100 * d['ci95'], 1)} " \
         f"({stats.verdict(d)})"


def tables(result: dict, arms, sizes) -> tuple[str, dict]:
  runs, probes = result["runs"], result["probes"]
  agg, probe_agg = stats.aggregate(runs), stats.aggregate(probes)
  cost = costs(result, arms, sizes)
  lines = ["## Networks pre-trained on P (MNIST-5k, 4,000 train images; test: its 1,000; "
           "student_p25: the student's architecture on the first 1,000)", "",
           "| network | P test accuracy | its P head on T's test, no adaptation | steps x batch | "
           "train FLOPs | wall time (s) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  # an AFT arm reads the published teacher with its P head: the trainer's teacher accuracy
  unadapted = {r["stage"]: r.get("teacher_test_accuracy") for r in runs
               if r["stage"] in ("aft", "aft_weak")}
  for name, r in result["pretrain"].items():
    on_t = unadapted.get({"resnet": "aft", "vit": "aft_weak"}.get(name))
    on_t = f"{on_t:.4f}" if on_t is not None else "-"
    lines.append(f"| {name} | {r['test_accuracy']:.4f} | {on_t} | {r['steps']} x "
                 f"{r['batch_size']} | {r['total_flops']:.3g} | {r['wall_time_s']:.0f} |")
  summary = {"arms": {}, "probes": {}, "claims": [], "costs": {}}
  for n in sizes:
    lines += ["", f"## T = UCI digits, {n} labelled images per class ({10 * n} in all)", "",
              "The published teachers adapted to T (probe: linear probe; tune: fine-tune), the "
              "teachers of paper A's arms:", "",
              "| adaptation | test accuracy, mean ± 95% CI | per seed | val accuracy (mean) |",
              "| --- | ---: | --- | ---: |"]
    for (pn, stage), a in probe_agg.items():
      if pn != n:
        continue
      summary["probes"][f"{stage}/n{n}"] = a
      lines.append(f"| {stage} | {_pm(a['mean'], a['ci95'])} | "
                   f"{', '.join(f'{x:.4f}' for x in a['test_accuracy'])} | "
                   f"{a['val_mean']:.4f} |")
    lines += ["", "| arm | what | test accuracy, mean ± 95% CI | per seed | val (mean) | "
              "vs scratch, points (paired) | vs finetune, points (paired) | "
              "agreement with teacher |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for arm in arms:
      a = agg.get((n, arm))
      if a is None:
        continue
      vs_s = stats.paired(runs, arm, "scratch", n) if arm != "scratch" else None
      vs_f = stats.paired(runs, arm, "finetune", n) if arm != "finetune" else None
      summary["arms"][f"{arm}/n{n}"] = {**a, "vs_scratch": vs_s, "vs_finetune": vs_f}
      agree = f"{a['agreement_mean']:.4f}" if a["agreement_mean"] is not None else "-"
      val = f"{a['val_mean']:.4f}" if a["val_mean"] is not None else "-"
      lines.append(f"| {arm} | {transfer.ARMS[arm][0]} | {_pm(a['mean'], a['ci95'])} | "
                   f"{', '.join(f'{x:.4f}' for x in a['test_accuracy'])} | {val} | "
                   f"{_diff(vs_s)} | {_diff(vs_f)} | {agree} |")
    lines += ["", f"Cost of each arm, {n} per class (FLOPs: XLA's count of the compiled steps x "
              "steps; seconds: the trainer's clock, mean over seeds):", "",
              "| arm | its run (+ teacher cache) | teacher's adaptation to T | "
              "student pre-training on P | synthetic images' sampling | "
              "total FLOPs | total s | vs finetune's total |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = cost.get((n, "finetune"))
    for arm in arms:
      c = cost.get((n, arm))
      if c is None:
        continue
      summary["costs"][f"{arm}/n{n}"] = c
      ratio = f"{c['total_flops'] / base['total_flops']:.2f}x" if base else "-"
      lines.append(f"| {arm} | {c['run_flops']:.3g} | {c['probe_flops']:.3g} | "
                   f"{c['student_pretrain_flops']:.3g} | {c['generation_flops']:.3g} | "
                   f"{c['total_flops']:.3g} | "
                   f"{c['total_s']:.0f} | {ratio} |")
  lines += ["", "## The papers' claims, measured", "",
            "Paired difference of test accuracy (points, mean over seeds ± 95% CI); 'better' / "
            "'worse' only when the interval excludes 0, otherwise 'no effect'.", "",
            "| paper | statement | arm - baseline | " + " | ".join(
                f"{n} per class" for n in sizes) + " |",
            "| --- | --- | --- | " + " | ".join("---:" for _ in sizes) + " |"]
  for paper, statement, arm, baseline in CLAIMS:
    if arm not in arms or baseline not in arms:
      continue
    cells, row = [], {"paper": paper, "statement": statement, "arm": arm, "baseline": baseline}
    for n in sizes:
      d = stats.paired(runs, arm, baseline, n)
      row[f"n{n}"] = d
      cells.append(_diff(d))
    summary["claims"].append(row)
    lines.append(f"| {paper} | {statement} | {arm} - {baseline} | {' | '.join(cells)} |")
  return "\n".join(lines), summary


def synthetic_tables(result: dict, sizes, grid: str | None) -> tuple[str, dict]:
  """The generator trained on P, and per size how the classifiers read its images: the probed
  teacher of each seed (never trained on them) and the P-trained ResNet with its P head."""
  g = result["generator"]
  last = {stage: g[stage]["history"][-1] for stage in ("vae", "unet")}
  cond = g["conditioning"]
  lines = ["## Synthetic images: the generator trained on P", "",
           f"A text-conditioned latent diffusion pipeline of Stable Diffusion's architecture "
           f"(kdjax/generate/train.py; diffusers' Flax VAE and UNet, transformers' CLIP text "
           f"encoder {g.get('text_encoder', '')}, SD v1's noise schedule, "
           f"{g.get('prediction_type') or transfer.generator_config().gen.prediction_type} "
           f"target) trained on P's "
           f"{g['corpus']['images']:,} training images only, at {g['resolution']} px, captions "
           f"{g['captions'][7]} for the digit 7. VAE: {g['vae']['steps']} steps x "
           f"{g['vae']['batch_size']}, reconstruction MSE {last['vae']['recon_mse']:.4f} (images "
           f"in [-1, 1]), latent scaling {g['vae']['scaling_factor']:.4f}; UNet: "
           f"{g['unet']['steps']} steps x {g['unet']['batch_size']}, loss "
           f"{last['unet']['mse']:.4f}. Training: {g['flops']:.3g} FLOPs, {g['wall_time_s']:.0f} s "
           f"(paid once, like the teachers' pre-training; the arms pay for sampling their "
           f"images). The caption states of two classes differ by "
           f"{cond['initial']['min_class_distance_rel']:.2f}-"
           f"{cond['initial']['mean_class_distance_rel']:.2f} of their norm with the random "
           f"text encoder (closest pair - mean pair), "
           f"{cond['trained']['min_class_distance_rel']:.2f}-"
           f"{cond['trained']['mean_class_distance_rel']:.2f} after training.", ""]
  synth = {}
  for r in result.get("synthetic", []):
    synth.setdefault((r["n_per_class"], r.get("multiple", transfer.SYNTH_MULTIPLE)),
                     []).append(r)
  probes = stats.aggregate(result["probes"])
  out = {"generator": {k: g[k] for k in ("flops", "wall_time_s", "conditioning",
                                         "resolution")}}
  lines += ["Class fidelity: the fraction of a set's images that a classifier assigns to the "
            "class their prompt named (mean ± 95% CI over the seeds' sets); the probed teacher "
            "is the one each seed's distilled arms learn from.", "",
            "| labelled per class | set | images per set | sampling | probed teacher on the "
            "synthetic set | per seed | the same teacher on T's real test | P-trained ResNet "
            "(P head) on the synthetic set | FLOPs per image | s per set |",
            "| ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
  for (n, multiple), rs in sorted(synth.items()):
    rs = sorted(rs, key=lambda r: r["seed"])
    if n not in sizes:
      continue
    key = f"n{n}" if multiple == transfer.SYNTH_MULTIPLE else f"n{n}_x{multiple}"
    fid = [r["fidelity"]["probe_resnet"]["accuracy"] for r in rs]
    fid_p = [r["fidelity"]["pretrain_resnet"]["accuracy"] for r in rs]
    real = probes.get((n, "probe_resnet"))
    gen = rs[0]["generation"]
    m, h = stats.interval(fid)
    mp, hp = stats.interval(fid_p)
    per_class = {c: float(np.mean([r["fidelity"]["probe_resnet"]["per_class"][c] for r in rs]))
                 for c in rs[0]["fidelity"]["probe_resnet"]["per_class"]}
    out[key] = {"probe_fidelity": fid, "probe_fidelity_mean": m, "probe_fidelity_ci95": h,
                "p_teacher_fidelity": fid_p, "per_class_mean": per_class,
                "images_per_set": gen["num_images"], "flops_per_image": gen.get("flops_per_image"),
                "seconds_per_set": float(np.mean([r["generation"].get("wall_time_s", 0.0)
                                                  for r in rs]))}
    sampling = (f"{transfer.SYNTH_SAMPLING['scheduler']}, "
                f"{transfer.SYNTH_SAMPLING['num_inference_steps']} steps, guidance "
                f"{transfer.SYNTH_SAMPLING['guidance_scale']:g}")
    lines.append(f"| {n} | {multiple}x | {gen['num_images']} | {sampling} | {_pm(m, h)} | "
                 f"{', '.join(f'{x:.4f}' for x in fid)} | "
                 f"{_pm(real['mean'], real['ci95']) if real else '-'} | {_pm(mp, hp)} | "
                 f"{gen.get('flops_per_image', 0.0):.3g} | "
                 f"{out[key]['seconds_per_set']:.1f} |")
  for n in sizes:
    if f"n{n}" in out:
      pc = out[f"n{n}"]["per_class_mean"]
      lines += ["", f"Per class ({n} labelled per class; probed teacher, mean over seeds): "
                + ", ".join(f"{c}: {v:.2f}" for c, v in pc.items())]
  if grid:
    lines += ["", f"![generated digits, one row per class; real P images on the right]({grid})"]
  return "\n".join(lines), out


def aft_tuning(result: dict, betas, sizes) -> tuple[str, dict]:
  """Per size: each beta's validation and test accuracy and its paired difference to fine-tuning;
  the beta with the best mean validation accuracy is chosen (test accuracy plays no part)."""
  runs = result["runs"] + result.get("aft_sweep", [])
  agg = stats.aggregate(runs)
  lines = ["## AFT's beta, chosen on T's validation split", "",
           "The validation hold-out is 10% of T's pool (43-44 images: one image is 2.3 points); "
           "beta is chosen by its mean over seeds.", "",
           "| labelled per class | beta | val accuracy (mean) | test accuracy, mean ± 95% CI | "
           "vs finetune, points (paired) | chosen |", "| ---: | ---: | ---: | ---: | ---: | --- |"]
  out = {}
  for n in sizes:
    rows = [(1.0, "aft")] + [(float(b), transfer.variant("aft", float(b))) for b in betas]
    have = [(b, stage, agg[(n, stage)]) for b, stage in rows if (n, stage) in agg]
    if not have:
      continue
    chosen = max(have, key=lambda x: (x[2]["val_mean"], -abs(np.log(x[0]))))[1]
    out[n] = {"chosen": chosen, "betas": {}}
    for b, stage, a in sorted(have):
      d = stats.paired(runs, stage, "finetune", n)
      out[n]["betas"][f"{b:g}"] = {**a, "vs_finetune": d}
      lines.append(f"| {n} | {b:g} | {a['val_mean']:.4f} | {_pm(a['mean'], a['ci95'])} | "
                   f"{_diff(d)} | {'yes' if stage == chosen else ''} |")
  return "\n".join(lines), out


def plot(summary: dict, result: dict, arms, sizes, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 6.4), dpi=110,
                           squeeze=False)
  markers = "osD^vPX*hd<>"
  colours = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
  for ax, n in zip(axes[0], sizes):
    for i, arm in enumerate(arms):
      a, c = summary["arms"].get(f"{arm}/n{n}"), summary["costs"].get(f"{arm}/n{n}")
      if a is None:
        continue
      colour = colours[i % len(colours)]
      ax.errorbar([c["total_flops"]], [a["mean"]], yerr=[a["ci95"] or 0.0],
                  fmt=markers[i % len(markers)], color=colour, capsize=4, markersize=7,
                  label=f"{arm}: {a['mean']:.3f}")
      ax.plot([c["total_flops"]] * len(a["test_accuracy"]), a["test_accuracy"], "_",
              color=colour, alpha=0.7, markersize=11)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs the arm pays: its run + its teacher's adaptation to T + the student's "
                  "P pre-training", fontsize=9)
    ax.set_ylabel("test accuracy on T (1,360 UCI digits)")
    ax.set_title(f"{n} labelled images per class: mean ± 95% CI over seeds (dashes: seeds)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
  fig.suptitle("kdjax transfer miniature: pre-trained on MNIST-5k, transferred to UCI digits",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def define_flags() -> None:
  """The script's flags (defined when it runs, so that importing it defines none)."""
  flags.DEFINE_string("workdir", "runs/transfer", "Where every run goes (resumable).")
  flags.DEFINE_string("out", "experiments/results/transfer",
                      "Where results.json, results.md and accuracy_vs_cost.png go.")
  flags.DEFINE_list("sizes", ["5", "20"], "T's labelled images per class.")
  flags.DEFINE_integer("seeds", 3, "Seeds 0 .. N-1 (each re-draws T's labelled subset).")
  flags.DEFINE_list("arms", list(transfer.ARMS), "Student arms.")
  flags.DEFINE_list(
      "aft_betas", ["0.1", "0.3", "3"], "Also run the `aft` arm at these betas (besides paper B's "
      "1; none: --aft_betas=) and choose beta per size by mean validation accuracy (paper B "
      "tunes beta per task).")
  flags.DEFINE_bool("dry_run", False, "Print the stages' commands; run nothing.")
  flags.DEFINE_bool("runlocal", False, "A few steps per stage (a smoke test).")
  flags.DEFINE_bool(
      "compile_cache", True, "Keep XLA's compiled programs in WORKDIR/xla_cache (same programs, "
      "same results; runs after the first of a shape skip most compilation).")


def main(argv):
  del argv
  sizes = [int(s) for s in FLAGS.sizes]
  seeds = list(range(FLAGS.seeds))
  arms = list(FLAGS.arms)
  unknown = sorted(set(arms) - set(transfer.ARMS))
  if unknown or not arms or not seeds or not sizes:
    raise app.UsageError(f"need known arms (unknown: {unknown}; valid: {list(transfer.ARMS)}), "
                         "--seeds >= 1 and at least one size")
  root = os.path.abspath(FLAGS.workdir)
  if FLAGS.dry_run:
    print("\n".join(_commands(root, sizes, seeds, arms)))
    return
  from kdjax import runtime

  runtime.configure(True)
  runtime.quiet_libraries()
  import jax

  if FLAGS.compile_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "xla_cache"))
  t0, load_start = time.perf_counter(), os.getloadavg()[0]
  result = transfer.run_all(root, arms, sizes, seeds, runlocal=FLAGS.runlocal,
                            log=lambda s: print(s, flush=True))
  betas = [float(b) for b in FLAGS.aft_betas]
  result["aft_sweep"] = []
  for n in sizes if betas else []:
    for seed in seeds:
      for beta in betas:
        print(f"--- aft beta={beta:g} n={n} seed={seed}", flush=True)
        result["aft_sweep"].append(transfer.run_stage("aft", root, n, seed,
                                                      runlocal=FLAGS.runlocal, beta=beta))
  text, summary = tables(result, arms, sizes)
  out = os.path.abspath(FLAGS.out)
  os.makedirs(out, exist_ok=True)
  if result.get("synthetic"):
    first = result["synthetic"][0]
    grid = transfer.synthetic_grid(root, first["n_per_class"], first["seed"],
                                   os.path.join(out, "synthetic_grid.png"))
    synth_text, summary["synthetic"] = synthetic_tables(result, sizes, os.path.basename(grid))
    text += "\n\n" + synth_text
  if betas:
    tuning_text, summary["aft_tuning"] = aft_tuning(result, betas, sizes)
    text += "\n\n" + tuning_text
  meta = {"command": " ".join(["python", "experiments/transfer.py", *sys.argv[1:]]),
          "machine": _cpu(), "total_wall_s": time.perf_counter() - t0,
          "load_average_1min": [load_start, os.getloadavg()[0]], "sizes": sizes,
          "seeds": seeds, "arms": arms,
          "interval": "95% CI of the mean over seeds: Student's t with n-1 degrees of freedom"}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "summary": summary, **result}, f, indent=2)
  plot(summary, result, arms, sizes, os.path.join(out, "accuracy_vs_cost.png"))
  header = (f"# kdjax transfer miniature: results\n\n```bash\n{meta['command']}\n```\n\n"
            f"Measured on {meta['machine']}; this invocation took "
            f"{meta['total_wall_s'] / 60:.1f} min (finished runs are read back, not re-run); "
            f"1-minute load average {load_start:.1f} at the start. Seeds {seeds}: each re-draws "
            "T's validation hold-out and labelled images and the student's initialisation. "
            "The setting: kdjax/tools/transfer.py. 95% CI: Student's t over seeds.\n\n")
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(header + text + "\n\n![accuracy against cost](accuracy_vs_cost.png)\n")
  print(text, flush=True)
  print(f"wrote {out}/results.md, results.json, accuracy_vs_cost.png "
        f"({meta['total_wall_s'] / 60:.1f} min)", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
