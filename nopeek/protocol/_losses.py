"""The loss terms of split learning: cross-entropy where the labels are, the NoPeek penalty
D(x, m) where the raw data is.

References: Vepakomma et al., "Reducing leakage in distributed deep learning for
sensitive health data", ICLR 2019 AI4SG workshop, Eq. (1); Vepakomma et al., "NoPeek:
information leakage reduction to share activations in distributed deep learning",
ICDMW 2020 (arXiv 2008.09161).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import metrics

LEAKAGE_TERMS = ("dcor", "log_dcor")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of logits (n, classes) against int labels (n,). Logits, not probabilities."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def leakage(x: jax.Array, m: jax.Array, kind: str = "dcor") -> jax.Array:
    """The NoPeek penalty D(x, m): V-statistic dCor of raw inputs and a message, or its log.

    x: (n, ...) raw inputs; m: (n, ...) what their owner sends. Returns a scalar.
    """
    d = metrics.distance_correlation(x, m)
    if kind == "dcor":
        return d
    if kind == "log_dcor":
        # dCor is 0 only for a constant m; keep the log (and its gradient) finite there.
        return jnp.log(jnp.maximum(d, 1e-6))
    raise ValueError(f"leakage term must be one of {LEAKAGE_TERMS}, got {kind!r}")
