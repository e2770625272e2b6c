"""The attacks of a sweep side by side: one bar per attack for every cell, the free guesses
(the mean image, the class-mean image) as lines across each cell."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nopeek.plots._common import _f, save_figure

# Each attack's column prefix in a results table (the decoder keeps the legacy `attack_*`), and its name.
ATTACK_PREFIXES = {"decoder": "attack", "adaptive": "adaptive", "adaptive_alpha": "adaptive_alpha", "sdar": "sdar",
                   "fora": "fora"}
ATTACK_TITLES = {"decoder": "decoder", "adaptive": "adaptive", "adaptive_alpha": "adaptive, alpha known",
                 "sdar": "SDAR", "fora": "FORA"}


def attack_comparison_figure(rows, path: str, *, metric: str = "ssim") -> str:
    """Bars of each attack's `metric` (ssim or mse) per cell (topology, cut, defence, seed),
    with the attacker's mean image (dashed) and class-mean image (dotted) across each cell."""
    names = [n for n, p in ATTACK_PREFIXES.items() if any(np.isfinite(_f(r.get(f"{p}_{metric}"))) for r in rows)]
    cells = sorted((r for r in rows if r.get("diverged") != "true"),
                   key=lambda r: (r["topology"], r["cut"], r["defense"], _f(r["strength"]), int(r["seed"])))
    guess = next((ATTACK_PREFIXES[n] for n in ("adaptive", "sdar", "fora", "adaptive_alpha") if n in names), "attack")
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(cells) + 2), 4.2))
    for j, name in enumerate(names):
        values = [_f(r.get(f"{ATTACK_PREFIXES[name]}_{metric}")) for r in cells]
        ax.bar(np.arange(len(cells)) - 0.4 + width * (j + 0.5), values, width, label=ATTACK_TITLES[name])
    for i, r in enumerate(cells):
        for column, style, label in ((f"{guess}_baseline_{metric}", "--", "mean image"),
                                     (f"{guess}_class_mean_{metric}", ":", "class-mean image")):
            ax.hlines(_f(r.get(column)), i - 0.45, i + 0.45, colors="k", linestyles=style, label=label if i == 0 else None)
    labels = [f"{r['topology']} {r['cut']}\n{r['defense']}" + (f" {_f(r['strength']):g}" if r["defense"] != "none" else "")
              for r in cells]
    ax.set_xticks(np.arange(len(cells)), labels, fontsize=8)
    ax.set_ylabel({"ssim": "SSIM of the reconstructions (higher: more leaks)",
                   "mse": "MSE of the reconstructions (lower: more leaks)"}[metric])
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Each attack on the same held-out targets, beside the free guesses")
    fig.tight_layout()
    return save_figure(fig, path)
