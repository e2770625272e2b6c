"""Figure drawing: `nopeek.plots.reconstruction_grid` (one image per row) against the same
grid drawn with one axes per sample (how it was drawn before, written out here as the
reference), on the grids nopeek draws: every attack run, sweep, audit and FSHA iteration.

Run:  python bench/figures.py [--repeats 5]

Prints the host first, then per grid the best of `repeats` draws of each and their ratio
(reference / nopeek: above 1 is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._host import host_line  # noqa: E402


def per_axes_grid(rows, row_labels, path):
    """The reference: one axes per sample, as `reconstruction_grid` drew before."""
    import matplotlib.pyplot as plt

    from nopeek.plots import save_figure

    rows = [np.asarray(r) for r in rows]
    m = min(len(r) for r in rows)
    flat = rows[0].ndim != 4
    fig, axes = plt.subplots(len(rows), m, figsize=(m * 0.8, len(rows) * (0.5 if flat else 0.9) + 0.4), squeeze=False)
    for i, (r, label) in enumerate(zip(rows, row_labels)):
        for j in range(m):
            s = r[j]
            picture = (s[..., 0] if s.shape[-1] == 1 else np.clip(s, 0, 1)) if s.ndim == 3 else s.reshape(1, -1)
            ax = axes[i, j]
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1, aspect="auto" if flat else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(host_line(), flush=True)
    from nopeek.plots import reconstruction_grid

    rng = np.random.default_rng(0)
    grids = {
        "digits 8x8, 3 rows of 16 (an attack run)": [rng.uniform(size=(16, 8, 8, 1)) for _ in range(3)],
        "mnist 28x28, 6 rows of 16 (a sweep's alphas)": [rng.uniform(size=(16, 28, 28, 1)) for _ in range(6)],
        "colour 32x32x3, 2 rows of 16": [rng.uniform(size=(16, 32, 32, 3)) for _ in range(2)],
        "tabular 30 features, 3 rows of 16": [rng.uniform(size=(16, 30)) for _ in range(3)],
    }
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "g.png")
        reconstruction_grid(grids[next(iter(grids))], ["a", "b", "c"], path)  # matplotlib's first-figure costs
        print(f"{'grid':48s} {'per axes':>9s} {'nopeek':>9s} {'ratio':>7s}")
        for name, rows in grids.items():
            labels = [f"row {i}" for i in range(len(rows))]
            ref = _best(lambda: per_axes_grid(rows, labels, path), args.repeats)
            ours = _best(lambda: reconstruction_grid(rows, labels, path), args.repeats)
            print(f"{name:48s} {ref:8.3f}s {ours:8.3f}s {ref / ours:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
