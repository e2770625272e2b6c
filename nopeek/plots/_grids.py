"""Pictures of samples and single attacks: reconstruction grids, label-leakage histograms,
FSHA's curves over iterations."""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nopeek.plots._common import save_figure


def _as_picture(sample: np.ndarray) -> np.ndarray:
    """An image (H, W, C) as (H, W, 3) in [0, 1] (grey repeated); a flat sample (d,) as a
    1 x d strip, grey."""
    s = np.asarray(sample, dtype=np.float32)
    if s.ndim == 3:
        s = np.repeat(s, 3, axis=-1) if s.shape[-1] == 1 else s[..., :3]
    else:
        s = np.repeat(s.reshape(1, -1, 1), 3, axis=-1)
    return np.clip(s, 0, 1)


def _mosaic(samples, gap: int) -> np.ndarray:
    """The pictures of `samples` side by side, `gap` white columns between them: (H, m*W + (m-1)*gap, 3)."""
    pictures = [_as_picture(s) for s in samples]
    white = np.ones((pictures[0].shape[0], gap, 3), np.float32)
    return np.concatenate([p for picture in pictures for p in (picture, white)][:-1], axis=1)


def reconstruction_grid(rows, row_labels, path: str, *, title: str | None = None) -> str:
    """One row per array of samples (rows[i]: (m, ...) in [0, 1]); the same columns in every row.

    Used for originals above reconstructions, and for one row per alpha in a sweep. Each row
    is one image (its samples side by side, a white gap between them) in its own axes: a
    figure of 16 columns is a handful of axes, not one per sample (3 rows of 16 draw 7x
    faster than with 48 axes: `bench/figures.py`).
    """
    rows = [np.asarray(r) for r in rows]
    m = min(len(r) for r in rows)
    flat = rows[0].ndim != 4
    gap = 1 if flat else max(1, rows[0].shape[2] // 8)
    fig, axes = plt.subplots(len(rows), 1, figsize=(m * 0.8, len(rows) * (0.5 if flat else 0.9) + 0.4), squeeze=False)
    for ax, r, label in zip(axes[:, 0], rows, row_labels):
        ax.imshow(_mosaic(r[:m], gap), vmin=0, vmax=1, aspect="auto" if flat else "equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def label_leakage_figure(norms, cosines, labels, scores: dict, path: str) -> str:
    """Histograms of cut-gradient norms and cosines per true label, with the AUCs and, in the
    title, chance at this n (`scores["leak_null95"]`, the permutation null; 0.5 only for
    endless samples)."""
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
        ax.set_title(f"AUC {auc:.3f}" + (f" (leaks as {1 - auc:.3f}: the rule read the other way round)"
                                         if auc < 0.5 else ""), fontsize=9)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("samples")
    null = scores.get("leak_null95")
    chance = (f"chance at n = {len(labels)}: AUC up to {null:.3f}, the 95% permutation null"
              if null is not None and np.isfinite(null) else "0.5 = chance for endless samples")
    fig.suptitle(f"Label leakage from cut gradients ({chance})", fontsize=10)
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
