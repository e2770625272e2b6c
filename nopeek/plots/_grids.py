"""Pictures of samples and single attacks: reconstruction grids, label-leakage histograms,
FSHA's curves over iterations."""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nopeek.plots._common import save_figure


def _as_picture(sample: np.ndarray) -> np.ndarray:
    """An image (H, W, C) as (H, W) or (H, W, 3); a flat sample as a 1 x d strip."""
    s = np.asarray(sample)
    if s.ndim == 3:
        return s[..., 0] if s.shape[-1] == 1 else np.clip(s, 0, 1)
    return s.reshape(1, -1)


def reconstruction_grid(rows, row_labels, path: str, *, title: str | None = None) -> str:
    """One row per array of samples (rows[i]: (m, ...) in [0, 1]); the same columns in every row.

    Used for originals above reconstructions, and for one row per alpha in a sweep.
    """
    rows = [np.asarray(r) for r in rows]
    m = min(len(r) for r in rows)
    flat = rows[0].ndim != 4
    fig, axes = plt.subplots(
        len(rows), m, figsize=(m * 0.8, len(rows) * (0.5 if flat else 0.9) + 0.4), squeeze=False
    )
    for i, (r, label) in enumerate(zip(rows, row_labels)):
        for j in range(m):
            ax = axes[i, j]
            ax.imshow(_as_picture(r[j]), cmap="gray", vmin=0, vmax=1, aspect="auto" if flat else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def label_leakage_figure(norms, cosines, labels, scores: dict, path: str) -> str:
    """Histograms of cut-gradient norms and cosines per true label, with the AUCs."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, name, auc in (
        (axes[0], np.asarray(norms), "gradient norm ||dL/dz||", scores["norm_auc"]),
        (axes[1], np.asarray(cosines), "cosine with a known positive's gradient", scores["direction_auc"]),
    ):
        bins = np.linspace(values.min(), values.max(), 40)
        for label, color in ((0, "tab:blue"), (1, "tab:red")):
            ax.hist(values[labels == label], bins=bins, alpha=0.6, color=color, label=f"label {label}")
        ax.set_xlabel(name)
        ax.set_title(f"AUC {auc:.3f}", fontsize=9)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("samples")
    fig.suptitle("Label leakage from cut gradients (0.5 = chance)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def fsha_curves_figure(history, path: str, *, title: str = "FSHA", detection: int | None = None) -> str:
    """MSE and SSIM of the FSHA server's reconstructions over iterations, the mean-image
    baselines dashed; a vertical line where a client-side detector fired.

    history: rows with "iteration", "mse", "ssim" and their "baseline_*" (one run), or
    {label: rows} for several runs in one figure."""
    runs = history if isinstance(history, dict) else {"FSHA": history}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, name, label in ((axes[0], "mse", "MSE (lower = better reconstruction)"), (axes[1], "ssim", "SSIM")):
        for run, rows in runs.items():
            ax.plot([h["iteration"] for h in rows], [h[name] for h in rows], "-o", markersize=3, label=run)
        first = next(iter(runs.values()))
        ax.plot([h["iteration"] for h in first], [h[f"baseline_{name}"] for h in first], "--", color="gray",
                label="mean image")
        if detection:
            ax.axvline(detection, color="tab:red", alpha=0.6, label="detector fired")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: held-out reconstructions", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
