"""Scores for reconstruction attacks, each next to the baseline the attacker gets for free.

For reconstructions x_hat of held-out inputs x (in [0, 1]): MSE, PSNR, SSIM (images),
dCor(x, x_hat), and the accuracy of a reference classifier trained on clean data when it
is shown x_hat ("does the reconstruction still carry the digit?"). The baseline is the
mean input of the attacker's own data, repeated: an attack is only informative where it
beats it. A second baseline is what the label alone gives: each target's class mean of the
attacker's inputs; an attack that does no better than it recovers the label and nothing
else of the input (`class_mean_*`, `beyond_label_*`).
"""

from __future__ import annotations

import warnings

import numpy as np

import metrics


class ReferenceClassifier:
    """A classifier trained on clean inputs (multinomial logistic regression on pixels)."""

    def __init__(self, x_train, y_train, *, max_iter: int = 300):
        from sklearn.exceptions import ConvergenceWarning  # here, not at import: seconds at start-up
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(_flat(x_train), np.asarray(y_train))

    def accuracy(self, x, y) -> float:
        return float(np.mean(self.model.predict(_flat(x)) == np.asarray(y)))


def _flat(x):
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def mean_image_baseline(x_attacker, n: int) -> np.ndarray:
    """The free guess: the attacker's mean input, repeated n times -> (n, *x_shape)."""
    mean = np.asarray(x_attacker, np.float32).mean(axis=0)
    return np.broadcast_to(mean, (n, *mean.shape)).copy()


def class_mean_baseline(x_attacker, y_attacker, y_targets) -> np.ndarray:
    """What knowing the label alone gives: each target's class mean of the attacker's inputs,
    (n_targets, *x_shape). A reconstruction that scores no better than this carries the
    label and nothing else of the input; classes the attacker never saw get its overall mean."""
    x = np.asarray(x_attacker, np.float32)
    y = np.asarray(y_attacker)
    overall = x.mean(axis=0)
    means = {c: x[y == c].mean(axis=0) for c in np.unique(y)}
    return np.stack([means.get(c, overall) for c in np.asarray(y_targets)])


def reconstruction_scores(x, x_hat, *, classifier: ReferenceClassifier | None = None, y=None) -> dict:
    """Scores of reconstructions `x_hat` of `x`, both (n, ...) in [0, 1].

    Returns:
      {"mse", "psnr", "ssim" (NaN for non-image data), "dcor", "classifier_accuracy"
      (NaN without a classifier)}.
    """
    x = np.asarray(x, np.float32)
    x_hat = np.asarray(x_hat, np.float32)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat shapes differ: {x.shape} vs {x_hat.shape}")
    is_image = x.ndim == 4
    return {
        "mse": float(metrics.mse(x, x_hat)),
        "psnr": float(metrics.psnr(x, x_hat)),
        "ssim": float(metrics.ssim(x, x_hat)) if is_image else float("nan"),
        "dcor": float(metrics.distance_correlation(x, x_hat, block_size=1024)),
        "classifier_accuracy": classifier.accuracy(x_hat, y) if classifier is not None else float("nan"),
    }


def scores_with_baseline(x, x_hat, x_attacker, *, classifier=None, y=None, y_attacker=None) -> dict:
    """`reconstruction_scores` of the attack, of the mean-image baseline (`baseline_*`), and,
    when the targets' labels `y` and the attacker's `y_attacker` are given, of the class-mean
    baseline (`class_mean_*`: what knowing the label alone gives) with the attack's margin
    over it: `beyond_label_ssim` = ssim - class_mean_ssim (> 0: the attack recovers more of
    the image than its label does), `beyond_label_mse` = mse - class_mean_mse (< 0: the same)."""
    attack = reconstruction_scores(x, x_hat, classifier=classifier, y=y)
    base = reconstruction_scores(x, mean_image_baseline(x_attacker, len(x)), classifier=classifier, y=y)
    out = {**attack, **{f"baseline_{k}": v for k, v in base.items()}}
    if y is not None and y_attacker is not None:
        label = reconstruction_scores(x, class_mean_baseline(x_attacker, y_attacker, y), classifier=classifier, y=y)
        out.update({f"class_mean_{k}": v for k, v in label.items()})
        out["beyond_label_ssim"] = attack["ssim"] - label["ssim"]
        out["beyond_label_mse"] = attack["mse"] - label["mse"]
    return out
