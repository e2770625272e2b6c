"""Label leakage from cut-layer gradients (two-party split learning, labels at the server).

The client sees dL/dz for every sample of a batch. For a binary task, Li et al.
("Label leakage and protection in two-party split learning", ICLR 2022) show two
attacks: the norm attack (with imbalanced classes, the positive class's gradients are
larger) and the direction attack (gradients of same-label samples point the same way:
the cosine with one known positive sample's gradient separates the classes).
"""

from __future__ import annotations

import numpy as np


def per_sample_flat(grads) -> np.ndarray:
    """(n, ...) per-sample cut gradients as (n, d) float64."""
    g = np.asarray(grads, np.float64)
    return g.reshape(g.shape[0], -1)


def norm_scores(grads) -> np.ndarray:
    """The norm attack's score per sample: ||g_i||."""
    return np.linalg.norm(per_sample_flat(grads), axis=1)


def direction_scores(grads, reference_index: int) -> np.ndarray:
    """The direction attack's score: cos(g_i, g_ref) with the gradient of one known positive sample."""
    g = per_sample_flat(grads)
    norms = np.linalg.norm(g, axis=1)
    ref = g[reference_index]
    denom = np.maximum(norms * np.linalg.norm(ref), 1e-30)
    return g @ ref / denom


def leak_null(labels, *, permutations: int = 2000, seed: int = 0) -> float:
    """The 95% quantile of max(AUC, 1 - AUC) when the scores carry nothing of the labels:
    AUCs of `permutations` random orderings of these labels (n and the positive count as
    given). Where an attacker may read either side of the AUC, this, not 0.5, is chance at
    this n (about 0.58 for 143 balanced samples)."""
    labels = np.asarray(labels)
    n, n1 = len(labels), int(np.sum(labels == 1))
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((permutations, n)), axis=1)[:, :n1] + 1  # the positives' ranks, 1..n
    auc = (ranks.sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(np.quantile(np.maximum(auc, 1 - auc), 0.95))


def label_leakage_auc(grads, labels, *, reference_index: int | None = None) -> dict:
    """AUC of recovering binary labels from cut gradients, by norm and by direction.

    Args:
      grads: (n, ...) per-sample gradients dL/dz that the client received.
      labels: (n,) true labels in {0, 1} (the attacker's target; used only to score).
      reference_index: a sample the attacker knows is positive (default: the first one).

    Returns:
      {"norm_auc", "direction_auc", "positive_rate", "reference_index", "leak_null95"}. 0.5 is
      chance for an AUC; `leak_null95` (`leak_null`) is chance for max(AUC, 1 - AUC) at this n.
    """
    from sklearn.metrics import roc_auc_score  # here, not at import: seconds at start-up

    labels = np.asarray(labels)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("label leakage needs a binary task with both labels 0 and 1 present")
    if len(labels) != len(np.asarray(grads)):
        raise ValueError("one gradient per label")
    if reference_index is None:
        reference_index = int(np.flatnonzero(labels == 1)[0])
    if labels[reference_index] != 1:
        raise ValueError("the reference sample must be a positive (label 1)")
    mask = np.arange(len(labels)) != reference_index  # score only samples the attacker does not know
    return {
        "norm_auc": float(roc_auc_score(labels, norm_scores(grads))),
        "direction_auc": float(roc_auc_score(labels[mask], direction_scores(grads, reference_index)[mask])),
        "positive_rate": float(labels.mean()),
        "reference_index": reference_index,
        "leak_null95": leak_null(labels),
    }
