"""Figures, as PNG files: reconstruction grids, label-leakage histograms, sweep trade-offs.

Every function takes plain arrays or a results table and a path; nothing here trains.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
    return _save(fig, path)


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
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ---- sweep figures (from results.csv rows) ----------------------------------


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _finite_mean(values) -> float:
    """Mean over the finite values (seeds); NaN when none is (e.g. the attack was off)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _curves(rows, defense_pair=("none", "nopeek"), annotate: str | None = None):
    """{cut: {"nopeek": [(alpha, acc, dcor, ssim, text)], "noise": [...]}}, averaged over seeds.

    `text` is the first member's `annotate` column ("" without `annotate`).
    """
    by_cut: dict = {}
    for r in rows:
        by_cut.setdefault(int(r["cut"]), []).append(r)
    out = {}
    for cut, rs in sorted(by_cut.items()):
        groups: dict = {}
        for r in rs:
            family = "noise" if r["defense"] == "noise" else "nopeek"
            level = _f(r["noise_scale"]) if family == "noise" else _f(r["alpha"])
            groups.setdefault((family, level), []).append(r)
        if ("nopeek", 0.0) in groups:  # the undefended cell starts both curves
            groups.setdefault(("noise", 0.0), groups[("nopeek", 0.0)])
        curves = {"nopeek": [], "noise": []}
        for (family, level), members in sorted(groups.items()):
            mean = lambda k: _finite_mean([_f(m[k]) for m in members])  # noqa: E731
            text = str(members[0].get(annotate, "")) if annotate else ""
            curves[family].append((level, mean("accuracy"), mean("dcor"), mean("attack_ssim"), text))
        out[cut] = curves
    return out


def _sweep_series(cut, family: str) -> str:
    return f"cut {cut}, {'NoPeek' if family == 'nopeek' else 'noise'}"


def tradeoff_figure(rows, path: str, *, annotate: str | None = None, series_label=None) -> str:
    """Accuracy against dCor(x, z) and against attack SSIM; one colour per cut, NoPeek solid, noise dashed.

    Args:
      annotate: a column whose value is written beside each point (e.g. a file name).
      series_label: callable(cut, family) -> legend text; default "cut {cut}, NoPeek|noise".
    """
    curves = _curves(rows, annotate=annotate)
    series_label = series_label or _sweep_series
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (cut, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        for family, style, marker in (("nopeek", "-", "o"), ("noise", "--", "s")):
            pts = c[family]
            if len(pts) < 1:
                continue
            level, acc, dcor, ssim = (np.array(v) for v in list(zip(*pts))[:4])
            label = series_label(cut, family)
            axes[0].plot(dcor, acc, style, marker=marker, color=color, label=label)
            axes[1].plot(ssim, acc, style, marker=marker, color=color, label=label)
            for ax, xs in ((axes[0], dcor), (axes[1], ssim)):
                for x_, y_, text in zip(xs, acc, (p[4] for p in pts)):
                    if text and np.isfinite(x_) and np.isfinite(y_):
                        ax.annotate(text, (x_, y_), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel("held-out dCor(x, z)  (lower = less leakage)")
    axes[1].set_xlabel("decoder attack SSIM  (lower = worse reconstructions)")
    for ax in axes:
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Privacy-utility trade-off: good defences sit top-left", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def metric_vs_alpha_figure(rows, metric: str, ylabel: str, path: str) -> str:
    """`metric` against the NoPeek weight, one line per cut (symlog x: alpha 0 included)."""
    curves = _curves(rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    index = {"accuracy": 1, "dcor": 2, "attack_ssim": 3}[metric]
    for cut, c in curves.items():
        pts = sorted(c["nopeek"])
        if pts:
            ax.plot([p[0] for p in pts], [p[index] for p in pts], "-o", label=f"cut {cut}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("NoPeek alpha")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def sweep_figures(rows, fig_dir: str, *, samples_dir: str | None = None) -> list[str]:
    """Every sweep figure into `fig_dir`; reconstruction grids where samples were saved."""
    if not rows:
        return []
    paths = [
        tradeoff_figure(rows, os.path.join(fig_dir, "tradeoff.png")),
        metric_vs_alpha_figure(rows, "dcor", "held-out dCor(x, z)", os.path.join(fig_dir, "dcor_vs_alpha.png")),
    ]
    if any(not np.isnan(_f(r["attack_ssim"])) for r in rows):
        paths.append(metric_vs_alpha_figure(rows, "attack_ssim", "decoder attack SSIM", os.path.join(fig_dir, "ssim_vs_alpha.png")))
    if samples_dir and os.path.exists(os.path.join(samples_dir, "originals.npy")):
        originals = np.load(os.path.join(samples_dir, "originals.npy"), allow_pickle=False)
        for cut in sorted({int(r["cut"]) for r in rows}):
            grid_rows, labels = [originals], ["original"]
            chosen = [r for r in rows if int(r["cut"]) == cut and r["defense"] in ("none", "nopeek") and int(r["seed"]) == min(int(x["seed"]) for x in rows)]
            for r in sorted(chosen, key=lambda r: _f(r["alpha"])):
                path = os.path.join(samples_dir, r.get("samples_file") or "-")
                if os.path.isfile(path):
                    grid_rows.append(np.load(path, allow_pickle=False))
                    labels.append(f"alpha {_f(r['alpha']):g}")
            if len(grid_rows) > 1:
                paths.append(reconstruction_grid(
                    grid_rows, labels, os.path.join(fig_dir, f"reconstructions_cut{cut}.png"),
                    title=f"decoder reconstructions of the same held-out samples, cut {cut}",
                ))
    return paths
