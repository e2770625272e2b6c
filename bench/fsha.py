"""A dishonest server (issue 12): the FSHA figures, the detection table and the label-defence
trade-off, printed from runs of the toolkit's own commands and functions.

Run:
  python bench/fsha.py --part curves --runs RUN_A0 RUN_A1E4 [--labels "no defence" "dCor 1e4"]
      (RUN_*: folders written by `nopeek attack --attack fsha`; draws docs/fsha_curves.png
      and copies their reconstructions.png to docs/fsha_reconstructions_*.png)
  python bench/fsha.py --part detection [--seeds 0,1,2,3,4] [--honest-steps 1000] [--fsha-steps 500]
      [--detectors splitguard,splitout] [--out docs/results/detection/detection.json]
      (SplitGuard and SplitOut against honest and FSHA servers on mnist5k, the README's
      client; --out keeps the rows and the command, and run.json beside it, for the table
      `detection` of docs/guide/defences.md)
  python bench/fsha.py --part labels --sweep DIR
      (DIR: `nopeek sweep --preset labels --out DIR`; prints the trade-off table, means over
      seeds, and copies DIR/figures/label_tradeoff.png to docs/)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._host import docs_results  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = os.path.join(ROOT, "docs")


def curves(runs, labels):
    from nopeek.plots import fsha_curves_figure

    histories = {}
    for run, label in zip(runs, labels):
        with open(os.path.join(run, "scores.json"), encoding="utf-8") as fh:
            scores = json.load(fh)
        histories[label] = scores["history"]
        name = "fsha_reconstructions_" + label.replace(" ", "_").replace("/", "_") + ".png"
        shutil.copy(os.path.join(run, "reconstructions.png"), os.path.join(DOCS, name))
        print(f"{label}: alpha {scores['alpha']:g}, attacker weight {scores['fsha_weight']:g}, {scores['fsha_steps']} "
              f"iterations: MSE {scores['mse']:.4f} (mean image {scores['baseline_mse']:.4f}), SSIM {scores['ssim']:.3f} "
              f"(mean image {scores['baseline_ssim']:.3f}), classifier {scores['classifier_accuracy']:.3f}, held-out "
              f"dCor(x, z) {scores['client_dcor']:.3f}; docs/{name}")
        for h in scores["history"]:
            print(f"  iteration {h['iteration']:>5d}: MSE {h['mse']:.4f}  SSIM {h['ssim']:.3f}")
    path = fsha_curves_figure(histories, os.path.join(DOCS, "fsha_curves.png"), title="FSHA on mnist5k, cnn cut 3")
    print(path)


def detection(seeds, honest_steps, fsha_steps, detectors, out):
    from nopeek import data
    from nopeek.core import write_json
    from nopeek.training import TrainConfig
    from nopeek.dishonest import FSHAConfig
    from nopeek.dishonest import SplitGuardConfig, SplitOutConfig, detection_study, detection_summary, format_detection

    ds = data.load("mnist5k")
    config = TrainConfig(dataset="mnist5k", model="cnn", widths=(8, 16, 64, 32), cuts=(3,))
    results = docs_results()
    before, t0 = results.load(), time.perf_counter()
    rows = detection_study(config, FSHAConfig(), SplitGuardConfig(), ds, seeds, honest_steps=honest_steps,
                           fsha_steps=fsha_steps, detectors=detectors, so_config=SplitOutConfig(),
                           log=lambda r: print(r["detector"], r["server"], r["seed"], r["fired"], r["iteration"],
                                               flush=True))
    seconds = time.perf_counter() - t0
    print(f"\nmnist5k, cnn (8,16,64,32) cut 3, honest runs of {honest_steps} iterations (SplitOut: the epoch it "
          f"watches), FSHA runs until detection (at most {fsha_steps}); seeds {','.join(map(str, seeds))}; "
          f"{seconds:.0f} s\n")
    print(format_detection(rows))
    if out:
        argv = [os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in sys.argv[1:]]
        command = " ".join(["python", "bench/fsha.py", *argv])
        write_json(out, {"command": command, "seconds": round(seconds, 1), "cpu": cpu(),
                         "summary": detection_summary(rows), "rows": rows})
        results.write_run(os.path.dirname(os.path.abspath(out)), command, seconds, before)
        print(out)


def cpu() -> str:
    """The CPU model and core count (what the timing was measured on)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    return f"{model or 'unknown'}; {os.cpu_count()} cores"


def labels(sweep):
    from nopeek.plots import label_tradeoff_points
    from nopeek.sweeps import read_rows

    rows = read_rows(os.path.join(sweep, "results.csv"))
    points = label_tradeoff_points(rows)
    print("| topology | defence | strength | seeds | test accuracy | norm AUC (leak) | direction AUC (leak) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    order = {"none": 0, "maxnorm": 1, "marvell": 2}
    for p in sorted(points, key=lambda p: (p["topology"], order.get(p["defense"], 3), p["strength"])):
        print(f"| {p['topology'] or '-'} | {p['defense']} | {p['strength']:g} | {p['n']} | {p['accuracy']:.3f} | "
              f"{p['norm_auc']:.3f} ({p['norm_leak']:.3f}) | {p['direction_auc']:.3f} ({p['direction_leak']:.3f}) |")
    shutil.copy(os.path.join(sweep, "figures", "label_tradeoff.png"), os.path.join(DOCS, "label_tradeoff.png"))
    print("docs/label_tradeoff.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("curves", "detection", "labels"), required=True)
    parser.add_argument("--runs", nargs="+", default=[])
    parser.add_argument("--labels", nargs="+", default=["no defence", "dCor 1e4"])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--honest-steps", type=int, default=1000)
    parser.add_argument("--fsha-steps", type=int, default=500)
    parser.add_argument("--sweep", default=None)
    parser.add_argument("--detectors", default="splitguard,splitout")
    parser.add_argument("--out", default=None, help="detection: write the rows, summary and command to this JSON file")
    args = parser.parse_args()
    if args.part == "curves":
        curves(args.runs, args.labels)
    elif args.part == "detection":
        detection([int(s) for s in args.seeds.split(",")], args.honest_steps, args.fsha_steps,
                  tuple(args.detectors.split(",")), args.out)
    else:
        labels(args.sweep)


if __name__ == "__main__":
    main()
