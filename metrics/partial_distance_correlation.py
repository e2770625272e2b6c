"""Partial distance covariance and correlation (Szekely & Rizzo 2014): what x and z share beyond y.

pdCor(x, z; y) is computed as the `dcor` package computes it: the U-centred distance
matrices A, B, C of x, z, y, their inner products <U, V> = sum_{i != j} U_ij V_ij /
(n (n - 3)), the bias-corrected correlations R_xz = <A,B> / sqrt(<A,A><B,B>) (and R_xy,
R_zy likewise, each 0 when its denominator is 0, clipped to [-1, 1]) and

    pdCor(x, z; y) = (R_xz - R_xy R_zy) / sqrt((1 - R_xy^2) (1 - R_zy^2)),

0 when the denominator is 0; pdCov(x, z; y) = <P(A), P(B)> = <A,B> - <A,C><B,C> / <C,C>
with P the projection onto the complement of C (<A,B> when <C,C> = 0). So a constant
y gives pdCor(x, z; y) = `u_distance_correlation_sqr(x, z)`, a constant x or z gives 0.
pdCor is the cosine of the angle between the parts of A and B orthogonal to C, so it
lies in [-1, 1]; a pdCor of 0 does not prove that x and z are independent given y
(Szekely & Rizzo 2014 give counterexamples; `dcor` cites their Sec. 4.2).

All six inner products are closed forms of the sums of three distance matrices
(`metrics._pairwise.distance_sums_many`), so `block_size=k` gives the same value with
O(n k) memory, as for the other distance statistics. Inputs are checked, flattened,
normalised and guarded as there (`metrics.distance_correlation`): NaN or inf anywhere
gives NaN; correlations ignore each input's scale. Beyond `dcor`, a denominator that is
round-off (a variance, or 1 - R^2 with |R| within 32 float epsilons of 1, as when z is
a similarity transform of y) counts as 0, so such cases read 0, not a ratio of two
round-off errors.

References: Szekely & Rizzo, "Partial distance correlation with methods for
dissimilarities", Ann. Statist. 42(6), 2014.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from metrics._pairwise import (
    as_samples,
    block_rows,
    check_samples,
    distance_sums_many,
    normalise,
    safe_sqrt,
)
from metrics.distance_correlation import _ROUNDOFF_ULPS, _U_MIN_SAMPLES, _correlation, _u_dcov

__all__ = ["partial_distance_correlation", "partial_distance_covariance"]


def _partial(x, z, y, block_size, statistic):
    """(pdCov, pdCor) of x and z given y; the inputs are checked before any tracing."""
    x = as_samples(x, "x")
    z = as_samples(z, "z")
    y = as_samples(y, "y")
    check_samples((x, z, y), ("x", "z", "y"), _U_MIN_SAMPLES, statistic)
    rows = block_rows(block_size)
    dtype = jnp.result_type(x.dtype, z.dtype, y.dtype)
    return _partial_jit(x.astype(dtype), z.astype(dtype), y.astype(dtype), rows)


def _clipped(cov, var_a, var_b):
    """R* = cov / sqrt(var_a var_b) clipped to [-1, 1], 0 when the denominator is 0 (as dcor)."""
    return jnp.clip(_correlation(cov, var_a, var_b), -1.0, 1.0)


@partial(jax.jit, static_argnums=3)
def _partial_jit(x, z, y, block_size):
    """(pdCov(x, z; y), pdCor(x, z; y)) of `x: (n, p)`, `z: (n, q)`, `y: (n, r)`."""
    finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(y))
    x, scale_x = normalise(x)
    z, scale_z = normalise(z)
    y, _ = normalise(y)
    n = float(x.shape[0])
    gram, rows, msd = distance_sums_many((x, z, y), block_size, shift_diagonal=False)
    u = [[_u_dcov(gram[l, m], rows[l], rows[m], n) for m in range(3)] for l in range(3)]
    # As in `_centred_products`: a variance that is round-off of zero is zero, and so is
    # every inner product with that input (a constant input is exactly zero already).
    eps = jnp.finfo(x.dtype).eps
    zero = [jnp.abs(u[m][m]) <= _ROUNDOFF_ULPS * eps * msd[m] for m in range(3)]
    u = [[jnp.where(zero[l] | zero[m], 0.0, u[l][m]) for m in range(3)] for l in range(3)]
    (xx, xz, xy), (_, zz, zy), (_, _, yy) = u

    # Partial distance covariance: <A,B> - <A,C><B,C>/<C,C>, scaled back to the inputs.
    c_nonzero = yy != 0
    cov = xz - jnp.where(c_nonzero, xy * zy / jnp.where(c_nonzero, yy, 1.0), 0.0)

    r_xz, r_xy, r_zy = _clipped(xz, xx, zz), _clipped(xy, xx, yy), _clipped(zy, zz, yy)
    # 1 - R^2 within round-off of 0 (z or x a similarity transform of y): denominator 0.
    tol = _ROUNDOFF_ULPS * eps
    rest_x, rest_z = 1.0 - r_xy**2, 1.0 - r_zy**2
    rest_x = jnp.where(rest_x <= tol, 0.0, rest_x)
    rest_z = jnp.where(rest_z <= tol, 0.0, rest_z)
    denom = safe_sqrt(rest_x) * safe_sqrt(rest_z)
    nonzero = denom > 0
    cor = jnp.where(nonzero, (r_xz - r_xy * r_zy) / jnp.where(nonzero, denom, 1.0), 0.0)
    cor = jnp.clip(cor, -1.0, 1.0)  # a cosine; round-off can step past +-1 (n = 4, say)
    return (
        jnp.where(finite, cov * scale_x * scale_z, jnp.nan),
        jnp.where(finite, cor, jnp.nan),
    )


def partial_distance_covariance(x, z, y, *, block_size: int | None = None) -> jax.Array:
    """Partial distance covariance pdCov(x, z; y) = <P(A), P(B)>, P projecting out C (U-centred).

    Args:
      x: (n, ...) samples, e.g. raw inputs; z: (n, ...) samples, e.g. cut activations;
      y: (n, ...) samples to condition on, e.g. one-hot labels. Needs n >= 4.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar (may be negative), equal to `dcor.partial_distance_covariance(x, z, y)`;
      0 when x or z is constant, `u_distance_covariance_sqr(x, z)` when y is constant,
      NaN when any entry is NaN or infinite.

    References: Szekely & Rizzo, Ann. Statist. 42(6), 2014.
    """
    cov, _ = _partial(x, z, y, block_size, "partial_distance_covariance")
    return cov


def partial_distance_correlation(x, z, y, *, block_size: int | None = None) -> jax.Array:
    """Partial distance correlation pdCor(x, z; y) in [-1, 1]: dependence of x and z beyond y.

    pdCor = (R_xz - R_xy R_zy) / sqrt((1 - R_xy^2)(1 - R_zy^2)), R the bias-corrected
    squared distance correlations (`u_distance_correlation_sqr`). For a split network:
    what the cut activations z reveal of the inputs x beyond the label y.

    Args:
      x: (n, ...) samples, e.g. raw inputs; z: (n, ...) samples, e.g. cut activations;
      y: (n, ...) samples to condition on, e.g. one-hot labels. Needs n >= 4.
      block_size: None, or rows per block (a positive integer) for the exact
        O(n * block_size)-memory form.

    Returns:
      scalar, equal to `dcor.partial_distance_correlation(x, z, y)`; 0 when x or z is
      constant (or either is fully explained by y), `u_distance_correlation_sqr(x, z)`
      when y is constant, NaN when any entry is NaN or infinite.

    References: Szekely & Rizzo, Ann. Statist. 42(6), 2014.
    """
    _, cor = _partial(x, z, y, block_size, "partial_distance_correlation")
    return cor
