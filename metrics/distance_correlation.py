"""Distance covariance and correlation (Szekely, Rizzo & Bakirov 2007), differentiable.

Names and values follow the `dcor` package: `distance_covariance_sqr`,
`distance_correlation_sqr`, `distance_correlation` are the biased V-statistics;
`u_distance_covariance_sqr`, `u_distance_correlation_sqr` the bias-corrected
U-statistics (Szekely & Rizzo 2014). Each sample is flattened to a vector and
compared by Euclidean (not squared) distance.

Every statistic is computed from five sums of the distance matrices a and b
(sum a*b, sum a*a, sum b*b, row sums of a and b), so `block_size=k` gives the
same value while holding only k x n distances at a time.

At the edges every statistic behaves as `dcor`'s does: a constant input (every
sample equal) gives exactly 0, with gradient 0, and a NaN or infinite entry
anywhere gives NaN. Each input is shifted by its first sample and divided by its
largest deviation from it before any distance is squared, so the correlations of
1e17 * x or 1e-18 * x equal those of x (for any input whose differences are
finite), and the covariances are scaled back afterwards (inf only where the value
itself exceeds the dtype).

Inputs are checked before tracing. `ValueError`: a scalar or empty input, unequal
sample counts, too few samples, a `block_size` that is not a positive integer
(True and 8.0 are refused; NumPy integers are fine). `TypeError`: an input that does not hold real
numbers (complex, strings, objects). Integer and boolean inputs are used as floats,
booleans as 0 and 1 (one-hot labels, say).

Partial dCor given a third input (`metrics.partial_distance_correlation`) and the
permutation test of dCor with its null (`metrics.distance_correlation_test`) build on
the same sums and checks.

References: Szekely, Rizzo & Bakirov, "Measuring and testing dependence by
correlation of distances", Ann. Statist. 35(6), 2007; Szekely & Rizzo, "Partial
distance correlation with methods for dissimilarities", Ann. Statist. 42(6), 2014.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from metrics._pairwise import (
    as_samples,
    block_rows,
    check_pair,
    distance_sums,
    normalise,
    safe_sqrt,
)

__all__ = [
    "distance_covariance_sqr",
    "distance_correlation_sqr",
    "distance_correlation",
    "u_distance_covariance_sqr",
    "u_distance_correlation_sqr",
]

_V_MIN_SAMPLES = 2
_U_MIN_SAMPLES = 4
# A distance variance below this many float epsilons of the mean squared distance is
# round-off, not signal (a real one is a sizeable fraction of it).
_ROUNDOFF_ULPS = 32


def _v_dcov(s_ab, row_a, row_b, n):
    """V-statistic mean_ij A_ij B_ij from sums: (S_ab - 2/n <R_a,R_b> + T_a T_b / n^2) / n^2."""
    t_a, t_b = jnp.sum(row_a), jnp.sum(row_b)
    return (s_ab - 2.0 / n * jnp.dot(row_a, row_b) + t_a * t_b / n**2) / n**2


def _u_dcov(s_ab, row_a, row_b, n):
    """U-statistic: (S_ab - 2/(n-2) <R_a,R_b> + T_a T_b / ((n-1)(n-2))) / (n (n-3))."""
    t_a, t_b = jnp.sum(row_a), jnp.sum(row_b)
    return (
        s_ab - 2.0 / (n - 2) * jnp.dot(row_a, row_b) + t_a * t_b / ((n - 1) * (n - 2))
    ) / (n * (n - 3))


def _correlation(cov, var_x, var_y):
    """cov / sqrt(|var_x var_y|), and 0 (with finite gradient) when the denominator is 0."""
    denom = safe_sqrt(jnp.abs(var_x * var_y))
    nonzero = denom > 0
    return jnp.where(nonzero, cov / jnp.where(nonzero, denom, 1.0), 0.0)


def _statistics(x, y, block_size, statistic, *, unbiased):
    """(dCov^2, dCor^2) of x and y, V- or U-statistics; the inputs are checked first,
    so that errors surface before any tracing."""
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_pair(x, y, _U_MIN_SAMPLES if unbiased else _V_MIN_SAMPLES, statistic)
    rows = block_rows(block_size)
    dtype = jnp.result_type(x.dtype, y.dtype)
    return _statistics_jit(x.astype(dtype), y.astype(dtype), rows, unbiased)


# Covariance and correlation come from one compiled function: they share its cache entry.
@partial(jax.jit, static_argnums=(2, 3))
def _statistics_jit(x, y, block_size, unbiased):
    """(dCov^2, dCor^2) of `x: (n, p)`, `y: (n, q)`; both NaN unless every entry is finite."""
    finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
    x, scale_x = normalise(x)
    y, scale_y = normalise(y)
    cov, var_x, var_y = _centred_products(x, y, block_size, unbiased)
    # Distances, and so dCov^2, are homogeneous of degree 1 in each input's scale.
    cov_sqr = cov * scale_x * scale_y
    cor_sqr = _correlation(cov, var_x, var_y)
    return jnp.where(finite, cov_sqr, jnp.nan), jnp.where(finite, cor_sqr, jnp.nan)


def _centred_products(x, y, block_size, unbiased):
    """(dCov^2(x, y), dVar^2(x), dVar^2(y)), each 0 where it is round-off of a zero variance."""
    n = float(x.shape[0])  # a Python int n**2 overflows int32 once n > 46,340
    s_ab, s_aa, s_bb, row_a, row_b, msd_x, msd_y = distance_sums(
        x, y, block_size, shift_diagonal=not unbiased
    )
    dcov = _u_dcov if unbiased else _v_dcov
    cov = dcov(s_ab, row_a, row_b, n)
    var_x = dcov(s_aa, row_a, row_a, n)
    var_y = dcov(s_bb, row_b, row_b, n)
    # A variance can be zero while its input is not constant (the U-statistic of n
    # equidistant points, say); computed, it is round-off. Call it zero, so dCor is 0
    # rather than a ratio of two round-off errors. A constant input is exactly zero
    # after `normalise`, so all its sums, and msd, are exactly 0 and this keeps them 0.
    tol = _ROUNDOFF_ULPS * jnp.finfo(x.dtype).eps
    zero_x = jnp.abs(var_x) <= tol * msd_x
    zero_y = jnp.abs(var_y) <= tol * msd_y
    zero = jnp.zeros_like(cov)
    return (
        jnp.where(zero_x | zero_y, zero, cov),
        jnp.where(zero_x, zero, var_x),
        jnp.where(zero_y, zero, var_y),
    )


def distance_covariance_sqr(x, y, *, block_size: int | None = None) -> jax.Array:
    """Squared distance covariance, V-statistic: dCov^2_n(x, y) = mean_ij A_ij B_ij.

    Args:
      x: (n, ...) samples; y: (n, ...) samples (flattened per sample).
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.distance_covariance_sqr(x, y)`; 0 when either input is
      constant, NaN when any entry is NaN or infinite.
    """
    cov_sqr, _ = _statistics(x, y, block_size, "distance_covariance_sqr", unbiased=False)
    return cov_sqr


def distance_correlation_sqr(x, y, *, block_size: int | None = None) -> jax.Array:
    """Squared distance correlation, V-statistic, in [0, 1]: dCov^2 / sqrt(dVar^2_x dVar^2_y).

    Args:
      x: (n, ...) samples; y: (n, ...) samples.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.distance_correlation_sqr(x, y)`; 0 when either input is
      constant, NaN when any entry is NaN or infinite.
    """
    _, cor_sqr = _statistics(x, y, block_size, "distance_correlation_sqr", unbiased=False)
    return cor_sqr


def distance_correlation(x, y, *, block_size: int | None = None) -> jax.Array:
    """Distance correlation, V-statistic, in [0, 1]: sqrt of `distance_correlation_sqr`.

    This is the NoPeek leakage measure dCor(x, z) between raw inputs and cut activations.

    Args:
      x: (n, ...) samples; y: (n, ...) samples.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.distance_correlation(x, y)`; 0 when either input is
      constant, NaN when any entry is NaN or infinite.

    References: Vepakomma et al., NoPeek, arXiv 2008.09161.
    """
    return safe_sqrt(distance_correlation_sqr(x, y, block_size=block_size))


def u_distance_covariance_sqr(x, y, *, block_size: int | None = None) -> jax.Array:
    """Bias-corrected squared distance covariance (U-statistic; may be negative). Needs n >= 4.

    Args:
      x: (n, ...) samples; y: (n, ...) samples.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.u_distance_covariance_sqr(x, y)`; 0 when either input is
      constant, NaN when any entry is NaN or infinite.
    """
    cov_sqr, _ = _statistics(x, y, block_size, "u_distance_covariance_sqr", unbiased=True)
    return cov_sqr


def u_distance_correlation_sqr(x, y, *, block_size: int | None = None) -> jax.Array:
    """Bias-corrected squared distance correlation, in [-1, 1]. Needs n >= 4.

    Args:
      x: (n, ...) samples; y: (n, ...) samples.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.u_distance_correlation_sqr(x, y)`; 0 when a variance term
      is 0 (either input constant, or n equidistant samples), NaN when any entry is
      NaN or infinite.
    """
    _, cor_sqr = _statistics(x, y, block_size, "u_distance_correlation_sqr", unbiased=True)
    return cor_sqr
