"""Whether a trained model means anything: collapsed (accuracy at chance, or a message
constant over the held-out set). The same rule marks sweep cells and `nopeek train` runs."""

from __future__ import annotations

import numpy as np


def chance_accuracy(y_test) -> float:
    """The accuracy of always guessing the majority class of the held-out labels."""
    y_test = np.asarray(y_test)
    return float(np.max(np.bincount(y_test)) / len(y_test))


def collapse_reason(accuracy: float, chance: float, z_test: np.ndarray) -> str:
    """Why a trained model counts as collapsed, or "": accuracy at chance (within 1 point
    of always guessing the majority class), or a message constant over the held-out set."""
    if np.isfinite(accuracy) and accuracy <= chance + 0.01:
        return "accuracy at chance"
    flat = np.asarray(z_test, np.float64).reshape(len(z_test), -1)
    spread = float(np.max(np.ptp(flat, axis=0))) if flat.size else 0.0
    scale = float(np.max(np.abs(flat))) if flat.size else 0.0
    if spread <= 1e-6 * (1.0 + scale):
        return "constant activations"
    return ""
