"""Kernel dependence measures: HSIC with a Gaussian kernel, and linear CKA.

References: Gretton et al., "Measuring statistical dependence with Hilbert-Schmidt
norms", ALT 2005; Kornblith et al., "Similarity of neural network representations
revisited", ICML 2019.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from metrics._pairwise import as_samples, center_features, check_pair, normalise

__all__ = ["hsic", "linear_cka", "median_bandwidth"]


def _squared_distances(x: jax.Array) -> jax.Array:
    """(n, n) squared Euclidean distances of `x: (n, p)`, zero diagonal, clamped at 0."""
    x = center_features(x)
    sq = jnp.sum(x * x, axis=1)
    gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    return d2 * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))


def median_bandwidth(x: jax.Array) -> jax.Array:
    """Median heuristic: the median Euclidean distance over pairs i < j of `x: (n, ...)`.

    Returns 1 when every pair coincides, so the kernel stays defined.
    """
    x = as_samples(x, "x")
    n = x.shape[0]
    d2 = _squared_distances(x)
    upper = d2[jnp.triu_indices(n, k=1)]
    sigma = jnp.sqrt(jnp.median(upper))
    return jnp.where(sigma > 0, sigma, 1.0)


def _gaussian_gram(x: jax.Array, sigma) -> jax.Array:
    d2 = _squared_distances(x)
    sigma = median_bandwidth(x) if sigma is None else jnp.asarray(sigma, x.dtype)
    return jnp.exp(-d2 / (2.0 * sigma**2))


def hsic(x, y, *, sigma_x=None, sigma_y=None) -> jax.Array:
    """Biased HSIC with Gaussian kernels: trace(K H L H) / (n - 1)^2.

    Args:
      x: (n, ...) samples; y: (n, ...) samples (flattened per sample).
      sigma_x: x's kernel bandwidth; None uses the median heuristic.
      sigma_y: y's, likewise.

    Returns:
      scalar >= 0; 0 when x and y are independent (in the population limit).

    References: Gretton et al. 2005, Eq. (4).
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    n = check_pair(x, y, 2, "hsic")
    return _hsic_jit(x, y, sigma_x, sigma_y, n)


@partial(jax.jit, static_argnums=4)
def _hsic_jit(x, y, sigma_x, sigma_y, n):
    k = _gaussian_gram(x, sigma_x)
    l = _gaussian_gram(y, sigma_y)
    # H K H without forming H: subtract row and column means, add the grand mean.
    kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
    return jnp.sum(kc * l) / (n - 1) ** 2


def linear_cka(x, y) -> jax.Array:
    """Linear centred kernel alignment: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in [0, 1].

    Args:
      x: (n, ...) samples; y: (n, ...) samples, features centred here.

    Returns:
      scalar; exactly 0 when either input is constant, NaN when any entry is NaN or
      infinite, and the same for x and s * x at any scale s (each input is shifted by its
      first sample and divided by its largest deviation first, as for dCor).

    References: Kornblith et al. 2019, Eq. (5).
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_pair(x, y, 2, "linear_cka")
    return _linear_cka_jit(x, y)


@jax.jit
def _linear_cka_jit(x, y):
    finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
    x = center_features(normalise(x)[0])
    y = center_features(normalise(y)[0])
    hp = jax.lax.Precision.HIGHEST
    cross = jnp.sum(jnp.matmul(y.T, x, precision=hp) ** 2)
    norm_x = jnp.sqrt(jnp.sum(jnp.matmul(x.T, x, precision=hp) ** 2))
    norm_y = jnp.sqrt(jnp.sum(jnp.matmul(y.T, y, precision=hp) ** 2))
    denom = norm_x * norm_y
    # A constant input is exactly zero after `normalise`, so its norm is exactly 0.
    cka = jnp.where(denom > 0, cross / jnp.where(denom > 0, denom, 1.0), 0.0)
    return jnp.where(finite, cka, jnp.nan)
