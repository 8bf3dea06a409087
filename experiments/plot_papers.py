r"""Plots collected paper results (ROOT/results.json of experiments/paper_a.py / paper_b.py) to PNG.

  python experiments/plot_papers.py runs/paper_a/results.json runs/paper_b/results.json
  python experiments/plot_papers.py runs/paper_a/results.json --out=paper_a.png

Paper A: one panel per student, tasks on the x axis, the arms side by side (scratch, pre-trained
+ fine-tuned, distilled from each teacher, also with 1x / 2x synthetic images, the adapted
teachers themselves). Paper B: one panel per (student, pre-trained model set), datasets on the
x axis, the arms side by side (stl, feature_kd, kd, aft_no_kernel, aft; not the tuning runs).
Bars: ours (final accuracy, mean over the finished seeds, error bar: its 95% confidence
interval); black diamonds: the paper's reported number where our sources give one; "n/a": no
finished run yet.
Works with any subset of results (missing cells, missing panels, nothing at all).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _unique(values):
  return list(dict.fromkeys(v for v in values if v is not None))


def panels(result):
  """([(title, [x labels], [(series label, key(x) -> cell key)])], columns of the figure)."""
  cells = result["cells"]
  xs = _unique(c["data"] for c in cells)
  students = _unique(c["student"] for c in cells)
  teachers = _unique(c["teacher"] for c in cells if c["arm"] != "teacher")
  arms = {c["arm"] for c in cells}
  out = []
  if result["paper"] == "A":
    for s in students:
      series = [(arm, lambda x, s=s, arm=arm: (None, s, x, arm))
                for arm in ("scratch", "finetune") if arm in arms]
      series += [(f"{arm} <- {t}", lambda x, s=s, t=t, arm=arm: (t, s, x, arm))
                 for arm in ("distill", "distill_syn1x", "distill_syn2x") if arm in arms
                 for t in teachers]
      series += [(f"teacher {t} (probe)", lambda x, t=t: (t, None, x, "teacher"))
                 for t in _unique(c["teacher"] for c in cells if c["arm"] == "teacher")]
      out.append((f"student {s}", xs, series))
    return out, 1
  for s in students:
    for t in teachers or [None]:
      series = [("stl", lambda x, s=s: (None, s, x, "stl"))] if "stl" in arms else []
      series += [(arm, lambda x, s=s, t=t, arm=arm: (t, s, x, arm))
                 for arm in ("feature_kd", "kd", "aft_no_kernel", "aft")
                 if arm in arms and t is not None]
      out.append((f"student {s}, pre-trained {t or '-'}", xs, series))
  return out, max(1, len(teachers))


def plot(result, out_path: str) -> dict:
  """Writes the figure; returns {"path", "panels", "bars" (ours), "paper_markers"}."""
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch

  by_key = {(c["teacher"], c["student"], c["data"], c["arm"]): c for c in result["cells"]}
  specs, ncols = panels(result)
  if not specs:
    specs, ncols = [("no results", [], [])], 1
  nrows = -(-len(specs) // ncols)
  width = max(max(len(xs) * (len(series) + 1) * 0.3 + 3.5 for _, xs, series in specs), 7.0)
  fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  counts = {"bars": 0, "paper_markers": 0}
  for ax, (title, xs, series) in zip(axes.flat, specs, strict=False):
    w = 0.8 / max(1, len(series))
    for j, (_, key) in enumerate(series):
      for i, x in enumerate(xs):
        cell = by_key.get(key(x))
        if cell is None:  # not planned
          continue
        pos = i - 0.4 + w * (j + 0.5)
        if cell["ours"] is not None:
          ax.bar(pos, cell["ours"], w, color=colors[j % len(colors)], capsize=2,
                 yerr=cell["ours_ci95"] if len(cell["seeds"]) > 1 else None)
          counts["bars"] += 1
        else:
          ax.text(pos, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="gray")
        if cell["paper"] is not None:
          ax.plot(pos, cell["paper"], "D", color="black", markersize=4)
          counts["paper_markers"] += 1
    ax.set_xticks(range(len(xs)), xs, rotation=20, fontsize=8)
    ax.set_xlim(-0.5, max(len(xs), 1) - 0.5)
    ax.set_ylim(0, 100)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=colors[j % len(colors)], label=label)
               for j, (label, _) in enumerate(series)]
    handles.append(Line2D([], [], marker="D", color="black", linestyle="", markersize=4,
                          label="paper (reported)"))
    if series:
      ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  for ax in list(axes.flat)[len(specs):]:
    ax.axis("off")
  note = "" if counts["paper_markers"] else " (the paper's numbers: none in our sources)"
  fig.suptitle(f"Paper {result['paper']}: ours (bars) vs reported (diamonds){note}", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return {"path": out_path, "panels": len(specs), **counts}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("results", nargs="+", help="results.json written by paper_a.py / paper_b.py")
  p.add_argument("--out", default="", help="PNG path (one input only; default: RESULTS.png)")
  args = p.parse_args(argv)
  if args.out and len(args.results) > 1:
    p.error("--out takes one results file")
  drawn = []
  for path in args.results:
    with open(path) as f:
      result = json.load(f)
    drawn.append(plot(result, args.out or os.path.splitext(path)[0] + ".png"))
    print(drawn[-1]["path"])
  return drawn


if __name__ == "__main__":
  main()
