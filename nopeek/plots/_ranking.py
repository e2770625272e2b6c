"""The defences' frontiers: accuracy against the strongest attack's score, one curve per
defence over its strengths, with the accuracy margins of the matched-utility ranking."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nopeek.plots._common import save_figure

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def defence_frontier_figure(groups: dict, path: str, *, margins=(0.01, 0.02, 0.05)) -> str:
    """One row of two panels per (topology, cut, message) of `groups` ({key: {"points",
    "reference_accuracy"}}, `nopeek.sweeps.frontier_points`): the strongest attack's SSIM
    and the clean classifier's accuracy on its reconstructions against test accuracy, each
    defence a curve over its strengths (means over seeds, 95% intervals on SSIM), the
    undefended model a star, the mean image's score dashed, the margins dotted; points of a
    defence with an epsilon are labelled with it."""
    keys = list(groups)
    fig, axes = plt.subplots(len(keys), 2, figsize=(12, 4.6 * len(keys)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, key in enumerate(keys):
        points, acc0 = groups[key]["points"], groups[key]["reference_accuracy"]
        names = [n for n in dict.fromkeys(p["defense"] for p in points) if n != "none"]
        reference = next((p for p in points if p["defense"] == "none"), None)
        for ax, metric, base, label in ((axes[row, 0], "strongest_ssim", "baseline_ssim", "strongest attack's SSIM"),
                                        (axes[row, 1], "strongest_classifier", "baseline_classifier",
                                         "clean classifier on the strongest reconstructions")):
            for i, name in enumerate(names):
                mine = [p for p in points if p["defense"] == name]
                if reference is not None:
                    mine = [reference] + mine
                acc = np.array([p["accuracy"] for p in mine])
                ys = np.array([p[metric] for p in mine])
                color = colors[i % len(colors)]
                ax.plot(acc, ys, "-", marker=_MARKERS[i % len(_MARKERS)], color=color, label=name, alpha=0.9)
                if metric == "strongest_ssim":
                    ci = np.array([p.get("strongest_ssim_ci", 0.0) for p in mine])
                    ax.errorbar(acc, ys, yerr=np.nan_to_num(ci), fmt="none", ecolor=color, alpha=0.4, capsize=2)
                for p, x_, y_ in zip(mine, acc, ys):
                    if p["defense"] != "none" and np.isfinite(p.get("dp_epsilon", np.nan)) and np.isfinite(y_):
                        ax.annotate(f"ε={p['dp_epsilon']:.2g}", (x_, y_), textcoords="offset points", xytext=(3, 3),
                                    fontsize=6, color=color)
            if reference is not None:
                ax.plot([reference["accuracy"]], [reference[metric]], "*", color="black", markersize=12,
                        label="no defence")
            bases = [p[base] for p in points if np.isfinite(p.get(base, np.nan))]
            if bases:
                ax.axhline(float(np.mean(bases)), color="grey", linestyle="--", linewidth=1, label="mean image (free)")
            if np.isfinite(acc0):
                for m in margins:
                    ax.axvline(acc0 - m, color="grey", linestyle=":", linewidth=0.8)
                    ax.annotate(f"-{m * 100:g} pt", (acc0 - m, ax.get_ylim()[1]), fontsize=6, color="grey",
                                ha="right", va="top", rotation=90)
            ax.set_xlabel("test accuracy")
            ax.set_ylabel(f"{label}\n(lower = less leakage)")
            ax.set_title(f"{key[0]}, cut {key[1]}, {key[2]}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=7, loc="best")
    fig.suptitle("Each defence's frontier over its strengths: good defences sit bottom-right", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
