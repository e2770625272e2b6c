"""Probes: how well a label (or any attribute) can be read from the cut activations.

A linear probe (multinomial logistic regression) and an MLP probe (one hidden layer),
both scikit-learn, fitted on the attacker's (z, label) pairs and scored on held-out ones,
reported next to chance (the majority-class rate of the held-out labels).
"""

from __future__ import annotations

import warnings

import numpy as np

PROBES = ("linear", "mlp")


def _make(kind: str, seed: int):
    # scikit-learn is imported here, not with the package: it costs seconds at start-up
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        model = LogisticRegression(max_iter=300)
    elif kind == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(128,), max_iter=200, random_state=seed, early_stopping=True)
    else:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    return make_pipeline(StandardScaler(), model)


def probe_accuracy(z_train, y_train, z_test, y_test, *, kind: str = "linear", seed: int = 0) -> dict:
    """Fit a probe z -> y on the attacker's pairs and score it on held-out pairs.

    Args:
      z_train: (n, ...) activations; y_train: (n,) labels; z_test, y_test likewise.

    Returns:
      {"probe": kind, "accuracy": float, "chance": float (majority rate of y_test)}.
    """
    z_train = np.asarray(z_train).reshape(len(z_train), -1)
    z_test = np.asarray(z_test).reshape(len(z_test), -1)
    if len(z_train) != len(y_train) or len(z_test) != len(y_test):
        raise ValueError("activations and labels must have the same number of samples")
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ValueError("the probe needs at least two classes among the attacker's labels")
    # The MLP probe's early stopping holds out 10% (at least 2 samples; stratified for 2 classes).
    if kind == "mlp" and (len(z_train) < 11 or (len(classes) == 2 and counts.min() < 2)):
        raise ValueError(f"the MLP probe needs at least 11 of the attacker's pairs (2 of each class for a binary "
                         f"label) to hold 10% out for early stopping; got {len(z_train)}, the fewest of a class {counts.min()}")
    from sklearn.exceptions import ConvergenceWarning

    model = _make(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(z_train, y_train)
    accuracy = float(np.mean(model.predict(z_test) == np.asarray(y_test)))
    chance = float(np.max(np.bincount(np.asarray(y_test))) / len(y_test))
    return {"probe": kind, "accuracy": accuracy, "chance": chance}
