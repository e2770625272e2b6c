"""What every figure shares: saving atomically-named PNGs, means with intervals, the
columns a results table must have to be drawn."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ---- sweep figures (from results.csv rows) ----------------------------------

FIGURE_COLUMNS = ("cut", "defense", "alpha", "noise_scale", "seed", "accuracy", "dcor")


def check_results(path: str) -> None:
    """Refuse (ConfigError, one line) a CSV that lacks the columns the figures read."""
    import csv

    from nopeek.errors import ConfigError

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from err
    missing = [c for c in FIGURE_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; is this a `nopeek sweep` results.csv?")


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def mean_ci(values) -> tuple[float, float]:
    """Mean over the finite values (seeds) and the half-width of its 95% t-interval (0 for one)."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
