"""Whether a training run means anything. Diverged: its loss became non-finite or exploded
(`exploded`); collapsed: accuracy at chance, or a message constant over the held-out set
(`collapse_reason`). The same rules mark sweep cells, `nopeek train` runs and the models
`nopeek attack` attacks."""

from __future__ import annotations

import numpy as np


# A loss this many times the first step's (the loss at initialisation) has exploded: the
# parameters left any region where training means something, even while still finite
# (SGD at --lr 1000 on digits reaches 3.6e28 in its first epoch).
EXPLOSION_FACTOR = 1e6


def exploded(loss, first_loss) -> np.ndarray:
    """(K,) whether each model's loss `loss` (K,) has diverged: non-finite, or over
    `EXPLOSION_FACTOR` times its first step's loss `first_loss` (K,) (at least 1, so a
    start near zero loss does not make every later wobble an explosion)."""
    loss = np.asarray(loss, np.float64)
    reference = np.maximum(np.abs(np.asarray(first_loss, np.float64)), 1.0)
    return ~np.isfinite(loss) | ~np.isfinite(reference) | (np.abs(loss) > EXPLOSION_FACTOR * reference)


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
