"""A dishonest server (issue 12): the FSHA table and figures, the detection table and the
label-defence trade-off, from runs of the toolkit's own commands and functions.

Run:
  python bench/fsha.py --part table [--fsha-steps 1000] [--out docs/results/fsha]
      (the three `nopeek train --server fsha` runs of docs/guide/dishonest.md's table, on
      bundled mnist5k: no defence; NoPeek alpha 10^4 against an attacker's weight 50; the
      same client against weight 1. Writes OUT/results.csv (one row per run), OUT/history.csv
      (their scores per checkpoint), OUT/reconstructions_<run>.png, OUT/fsha_curves.png and
      OUT/run.json)
  python bench/fsha.py --part curves --runs RUN_A RUN_B [--labels "no defence" "dCor 1e4"] [--out DIR]
      (RUN_*: folders written by `nopeek train --server fsha`; draws DIR/fsha_curves.png and
      copies their reconstructions.png to DIR/reconstructions_<label>.png)
  python bench/fsha.py --part detection [--seeds 0,1,2,3,4] [--honest-steps 1000] [--fsha-steps 500]
      [--detectors splitguard,splitout] [--out docs/results/detection/detection.json]
      (SplitGuard and SplitOut against honest and FSHA servers on mnist5k, the README's
      client; --out keeps the rows and the command, and run.json beside it, for the table
      `detection` of docs/guide/defences.md)
  python bench/fsha.py --part labels --sweep DIR
      (DIR: `nopeek sweep --preset labels --out DIR`; prints the trade-off table, means over
      seeds: the table docs/results.py draws (renderer `labels`) from docs/results/labels,
      the preset's committed run)
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


# The table's runs: (name, label, the options of `nopeek train --server fsha` beyond the client's).
CLIENT = ["--dataset", "mnist5k", "--model", "cnn", "--widths", "8,16,64,32", "--cut", "3"]
TABLE_RUNS = [
    ("no_defence", "no defence", []),
    ("nopeek_1e4_weight50", "NoPeek 1e4, weight 50", ["--alpha", "10000", "--fsha-weight", "50"]),
    ("nopeek_1e4_weight1", "NoPeek 1e4, weight 1", ["--alpha", "10000"]),
]
TABLE_COLUMNS = ["run", "alpha", "fsha_weight", "client_nopeek_step", "fsha_steps", "mse", "baseline_mse",
                 "class_mean_mse", "ssim", "baseline_ssim", "class_mean_ssim", "classifier_accuracy",
                 "baseline_classifier_accuracy", "client_dcor", "client_dcor_null95", "client_pdcor_label",
                 "task_probe_accuracy", "task_probe_chance", "n_public", "n_private", "seconds", "command"]
HISTORY_COLUMNS = ["run", "iteration", "mse", "baseline_mse", "ssim", "baseline_ssim", "classifier_accuracy",
                   "baseline_classifier_accuracy", "client_dcor"]


def _write_csv(path, rows, columns):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table(fsha_steps, out):
    """The three runs of the guide's FSHA table, each `nopeek train --server fsha` (in this
    process), their final scores in out/results.csv and their checkpoints in out/history.csv."""
    import tempfile

    from nopeek.cli import main as nopeek

    results = docs_results()
    before, t0 = results.load(), time.perf_counter()
    rows, history = [], []
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nopeek-fsha-") as tmp:
        runs = []
        for name, label, options in TABLE_RUNS:
            argv = ["train", "--server", "fsha", *CLIENT, *options, "--fsha-steps", str(fsha_steps)]
            run = os.path.join(tmp, name)
            t_run = time.perf_counter()
            assert nopeek([*argv, "--out", run, "--quiet"]) == 0
            with open(os.path.join(run, "scores.json"), encoding="utf-8") as fh:
                scores = json.load(fh)
            rows.append({"run": name, **{k: scores[k] for k in TABLE_COLUMNS if k in scores},
                         "seconds": round(time.perf_counter() - t_run, 1), "command": " ".join(["nopeek", *argv])})
            history += [{"run": name, **h} for h in scores["history"]]
            runs.append((run, label))
            print(rows[-1], flush=True)
        curves([r for r, _ in runs[:2]], [label for _, label in runs[:2]], out)
        shutil.copy(os.path.join(runs[2][0], "reconstructions.png"),
                    os.path.join(out, "reconstructions_" + _file_label(runs[2][1]) + ".png"))
    _write_csv(os.path.join(out, "results.csv"), rows, TABLE_COLUMNS)
    _write_csv(os.path.join(out, "history.csv"), history, HISTORY_COLUMNS)
    command = f"python bench/fsha.py --part table --fsha-steps {fsha_steps}"
    if os.path.abspath(out) != os.path.abspath(os.path.join(DOCS, "results", "fsha")):
        command += f" --out {os.path.relpath(os.path.abspath(out), os.path.abspath(ROOT))}"
    results.write_run(out, command, time.perf_counter() - t0, before)
    print(f"{time.perf_counter() - t0:.0f} s -> {out}")


def _file_label(label: str) -> str:
    return label.replace(" ", "_").replace("/", "_").replace(",", "")


def curves(runs, labels, out):
    from nopeek.plots import fsha_curves_figure

    os.makedirs(out, exist_ok=True)
    histories = {}
    for run, label in zip(runs, labels):
        with open(os.path.join(run, "scores.json"), encoding="utf-8") as fh:
            scores = json.load(fh)
        histories[label] = scores["history"]
        name = "reconstructions_" + _file_label(label) + ".png"
        shutil.copy(os.path.join(run, "reconstructions.png"), os.path.join(out, name))
        print(f"{label}: alpha {scores['alpha']:g}, attacker weight {scores['fsha_weight']:g}, {scores['fsha_steps']} "
              f"iterations: MSE {scores['mse']:.4f} (mean image {scores['baseline_mse']:.4f}), SSIM {scores['ssim']:.3f} "
              f"(mean image {scores['baseline_ssim']:.3f}), classifier {scores['classifier_accuracy']:.3f}, held-out "
              f"dCor(x, z) {scores['client_dcor']:.3f}; {os.path.join(out, name)}")
        for h in scores["history"]:
            print(f"  iteration {h['iteration']:>5d}: MSE {h['mse']:.4f}  SSIM {h['ssim']:.3f}")
    path = fsha_curves_figure(histories, os.path.join(out, "fsha_curves.png"), title="FSHA on mnist5k, cnn cut 3")
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
    print(os.path.join(sweep, "figures", "label_tradeoff.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("table", "curves", "detection", "labels"), required=True)
    parser.add_argument("--runs", nargs="+", default=[])
    parser.add_argument("--labels", nargs="+", default=["no defence", "dCor 1e4"])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--honest-steps", type=int, default=1000)
    parser.add_argument("--fsha-steps", type=int, default=None,
                        help="table: FSHA iterations of each run (1000); detection: at most this many (500)")
    parser.add_argument("--sweep", default=None)
    parser.add_argument("--detectors", default="splitguard,splitout")
    parser.add_argument("--out", default=None, help="table, curves: the folder (docs/results/fsha); detection: write "
                        "the rows, summary and command to this JSON file (and run.json beside it)")
    args = parser.parse_args()
    folder = args.out or os.path.join(DOCS, "results", "fsha")
    if args.part == "table":
        table(args.fsha_steps or 1000, folder)
    elif args.part == "curves":
        curves(args.runs, args.labels, folder)
    elif args.part == "detection":
        detection([int(s) for s in args.seeds.split(",")], args.honest_steps, args.fsha_steps or 500,
                  tuple(args.detectors.split(",")), args.out)
    else:
        labels(args.sweep)


if __name__ == "__main__":
    main()
