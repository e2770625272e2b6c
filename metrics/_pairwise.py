"""Pairwise Euclidean distances, safe to differentiate, whole or by row blocks.

Internal helpers for the distance statistics: nothing here is public API.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _is_real(dtype) -> bool:
    """Whether `dtype` holds real numbers: bool, integer or floating (bfloat16 included)."""
    return any(jnp.issubdtype(dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_))


def as_samples(x, name: str) -> jax.Array:
    """Flatten `x: (n, ...)` to `(n, p)` floats; a 1-D `x: (n,)` becomes `(n, 1)`.

    Integer and boolean inputs become the default float type (booleans as 0 and 1,
    e.g. one-hot labels). Checks use only shape and dtype, so they raise before
    (or while) tracing, never on traced values.

    Raises:
      TypeError: `x` does not hold real numbers (complex, strings, objects).
      ValueError: `x` is a scalar, or empty (no samples, or samples with no values).
    """
    if not isinstance(x, jax.Array):  # lists and NumPy arrays: see the dtype before JAX does
        x = np.asarray(x)
    if not _is_real(x.dtype):
        raise TypeError(f"{name} must hold real numbers (bool, int or float), got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have a leading sample axis, got a scalar")
    if x.size == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(x.shape)}): it needs at least one sample, "
            "each with at least one value"
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x.reshape(x.shape[0], -1)


def check_pair(x: jax.Array, y: jax.Array, min_samples: int, statistic: str) -> int:
    """Raise `ValueError` unless `x` and `y` hold the same number (>= `min_samples`) of samples."""
    n, m = x.shape[0], y.shape[0]
    if n != m:
        raise ValueError(
            f"{statistic}: x and y must hold the same number of samples, got {n} and {m}"
        )
    if n < min_samples:
        raise ValueError(f"{statistic} needs at least {min_samples} samples, got {n}")
    return n


def safe_sqrt(t: jax.Array) -> jax.Array:
    """sqrt(max(t, 0)) whose gradient is 0, not inf/NaN, where t <= 0; NaN stays NaN."""
    positive = t > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, t, 1.0)), jnp.where(t <= 0, 0.0, t))


def normalise(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`x: (n, p)` as (x - x_0) / s, and s = max |x - x_0|: a scalar, 0 iff every row equals x_0.

    Distance statistics are invariant to shifts and (for correlations) to scale, so
    this changes nothing mathematically, but it keeps squared distances in range for
    inputs like 1e17 * x or 1e-18 * x, and it makes a constant input exactly zero:
    subtracting a row is exact where rows are equal (a computed mean, say 3.7 over
    n = 10 samples, is not). Both x_0 and s are constants to autodiff: the statistics
    (covariances once scaled back by s) do not depend on them, so gradients are unchanged.
    """
    deviation = x - jax.lax.stop_gradient(x[:1])
    scale = jax.lax.stop_gradient(jnp.max(jnp.abs(deviation)))
    return deviation / jnp.where(scale > 0, scale, 1.0), scale


def center_features(x: jax.Array) -> jax.Array:
    """Subtract the per-feature mean: distances are unchanged, Gram round-off shrinks."""
    return x - jnp.mean(x, axis=0, keepdims=True)


def distance_rows(
    x_rows: jax.Array, x: jax.Array, sq_rows: jax.Array, sq: jax.Array
) -> jax.Array:
    """Euclidean distances `(b, n)` between `x_rows: (b, p)` and `x: (n, p)`.

    ||u - v|| = sqrt(|u|^2 + |v|^2 - 2 u.v): one matrix product, no (b, n, p) tensor.
    """
    gram = jnp.matmul(x_rows, x.T, precision=jax.lax.Precision.HIGHEST)
    return safe_sqrt(sq_rows[:, None] + sq[None, :] - 2.0 * gram)


def distance_sums(
    x: jax.Array, y: jax.Array, block_size: int | None, *, shift_diagonal: bool
):
    """The sufficient sums of the (shifted) distance matrices a = |x_i - x_j| - c_x, b likewise.

    Double centering is invariant to adding a constant to every entry (V-statistics,
    `shift_diagonal=True`) and U-centering to adding one to every off-diagonal entry
    (`shift_diagonal=False`). Subtracting about the mean distance before summing
    removes most of the cancellation that costs float32 its accuracy.

    Args:
      x: (n, p) samples; y: (n, q) samples.
      block_size: None for whole n x n matrices, or rows per block (memory O(n * block_size)).
      shift_diagonal: whether the shift also applies to the diagonal (see above).

    Returns:
      (s_ab, s_aa, s_bb, row_a, row_b, msd_x, msd_y): scalars sum_ij a_ij b_ij, sum a^2,
      sum b^2, the row sums `(n,)` of a and b, and the mean squared distances of x and y
      (the scale that round-off in the sums is relative to). Every distance statistic
      is a function of these.
    """
    n = x.shape[0]
    x = center_features(x)
    y = center_features(y)
    sq_x = jnp.sum(x * x, axis=1)
    sq_y = jnp.sum(y * y, axis=1)
    # sqrt(mean squared distance): near the mean distance; any constant is exact.
    msd_x = jax.lax.stop_gradient(2.0 * jnp.mean(sq_x))
    msd_y = jax.lax.stop_gradient(2.0 * jnp.mean(sq_y))
    shift_x, shift_y = jnp.sqrt(msd_x), jnp.sqrt(msd_y)

    def block(start, rows):
        xr = jax.lax.dynamic_slice_in_dim(x_pad, start, rows)
        yr = jax.lax.dynamic_slice_in_dim(y_pad, start, rows)
        a = distance_rows(xr, x, jax.lax.dynamic_slice_in_dim(sq_x_pad, start, rows), sq_x)
        b = distance_rows(yr, y, jax.lax.dynamic_slice_in_dim(sq_y_pad, start, rows), sq_y)
        # The diagonal is exactly zero; round-off in the Gram form must not leak in,
        # and padding rows (index >= n) must contribute nothing.
        row_index = start + jnp.arange(rows)[:, None]
        valid = row_index < n
        off_diagonal = row_index != jnp.arange(n)[None, :]
        shifted = valid if shift_diagonal else valid & off_diagonal
        a = jnp.where(shifted, jnp.where(off_diagonal, a, 0.0) - shift_x, 0.0)
        b = jnp.where(shifted, jnp.where(off_diagonal, b, 0.0) - shift_y, 0.0)
        return (
            jnp.sum(a * b),
            jnp.sum(a * a),
            jnp.sum(b * b),
            jnp.sum(a, axis=1),
            jnp.sum(b, axis=1),
        )

    if block_size is None or block_size >= n:
        x_pad, y_pad, sq_x_pad, sq_y_pad = x, y, sq_x, sq_y
        return (*block(0, n), msd_x, msd_y)

    rows = int(block_size)
    n_blocks = -(-n // rows)
    pad = n_blocks * rows - n
    x_pad = jnp.pad(x, ((0, pad), (0, 0)))
    y_pad = jnp.pad(y, ((0, pad), (0, 0)))
    sq_x_pad = jnp.pad(sq_x, (0, pad))
    sq_y_pad = jnp.pad(sq_y, (0, pad))
    # Recompute each block in the backward pass instead of storing n x n residuals.
    body = jax.checkpoint(lambda start: block(start, rows))
    s_ab, s_aa, s_bb, row_a, row_b = jax.lax.map(body, jnp.arange(n_blocks) * rows)
    return (
        jnp.sum(s_ab),
        jnp.sum(s_aa),
        jnp.sum(s_bb),
        row_a.reshape(-1)[:n],
        row_b.reshape(-1)[:n],
        msd_x,
        msd_y,
    )
