"""Does NoPeek stop FSHA? The authors' dCor client (its NoPeek step separate) against FSHA,
over the client's alpha and the attacker's gradient weight, several seeds.

    python bench/fsha_nopeek.py [--alphas 0,100,1000,10000] [--weights 1,50] [--seeds 0,1,2]
                                [--steps 1000] [--out docs/results/fsha_vs_nopeek]

Bundled mnist5k, the README's FSHA client (cnn 8,16,64,32 cut after the pool). Writes
OUT/results.csv (one row per run: `nopeek.dishonest.STUDY_COLUMNS`), OUT/run.json (the
command, wall time, CPU) and OUT/fsha_vs_nopeek.png (FSHA's MSE against the client's
held-out dCor, per attacker weight).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._host import cpu, host_line  # noqa: E402
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [{k: (float(v) if k != "client_nopeek_step" else v) for k, v in r.items()} for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, weight in enumerate(sorted({r["fsha_weight"] for r in rows})):
        mine = [r for r in rows if r["fsha_weight"] == weight]
        color = f"C{i}"
        for ax, y, ylabel in ((axes[0], "mse", "FSHA reconstruction MSE (held out)"),
                              (axes[1], "task_probe_accuracy", "linear probe on z: label accuracy")):
            for r in mine:  # hollow: the client collapsed (constant messages, or the probe at chance)
                dead = r["client_dcor"] < 1e-3 or r["task_probe_accuracy"] <= r["task_probe_chance"] + 0.02
                ax.plot(r["client_dcor"], r[y], "o", color=color, alpha=0.8, mfc="none" if dead else color)
                ax.annotate(f"{r['alpha']:g}", (r["client_dcor"], r[y]), fontsize=6, xytext=(3, 2),
                            textcoords="offset points", color=color)
            ax.plot([], [], "o", color=color, label=f"attacker weight {weight:g}")
            ax.set_xlabel("client's held-out dCor(x, z)")
            ax.set_ylabel(ylabel)
    null = np.median([r["client_dcor_null95"] for r in rows if r["client_dcor"] > 1e-3])  # live clients' nulls
    for ax in axes:
        ax.axvline(null, color="0.4", ls="-.", lw=1, label=f"dCor null 95% ({null:.2f})")
        ax.plot([], [], "o", color="0.4", mfc="none", label="client collapsed")
    base = np.mean([r["baseline_mse"] for r in rows])
    label = np.mean([r["class_mean_mse"] for r in rows])
    axes[0].axhline(base, color="gray", ls="--", label=f"mean image ({base:.3f})")
    axes[0].axhline(label, color="gray", ls=":", label=f"class-mean image ({label:.3f})")
    chance = np.mean([r["task_probe_chance"] for r in rows])
    axes[1].axhline(chance, color="gray", ls="--", label=f"chance ({chance:.2f})")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("FSHA against the authors' dCor client (separate NoPeek step); numbers: alpha", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", default="0,100,1000,10000")
    parser.add_argument("--weights", default="1,50")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "fsha_vs_nopeek"))
    args = parser.parse_args()
    from nopeek import data
    from nopeek.dishonest import STUDY_COLUMNS, FSHAConfig, fsha_nopeek_study
    from nopeek.training import TrainConfig

    print(host_line())
    ds = data.load("mnist5k")
    config = TrainConfig(dataset="mnist5k", model="cnn", widths=(8, 16, 64, 32), cuts=(3,))
    t0 = time.perf_counter()
    rows = fsha_nopeek_study(config, FSHAConfig(), ds, alphas=[float(a) for a in args.alphas.split(",")],
                             weights=[float(w) for w in args.weights.split(",")],
                             seeds=[int(s) for s in args.seeds.split(",")], steps=args.steps,
                             log=lambda r: print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()},
                                                 flush=True))
    seconds = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=STUDY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "run.json"), "w", encoding="utf-8") as fh:
        json.dump({"command": "python bench/fsha_nopeek.py " + " ".join(sys.argv[1:]), "seconds": round(seconds, 1),
                   "cpu": cpu(), "date": time.strftime("%Y-%m-%d")}, fh, indent=2)
    print(figure(rows, os.path.join(args.out, "fsha_vs_nopeek.png")))
    print(f"{len(rows)} runs in {seconds:.0f} s; {args.out}/results.csv")


if __name__ == "__main__":
    main()
