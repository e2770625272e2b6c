"""Pairwise Euclidean distances, safe to differentiate, whole or by row blocks.

Internal helpers for the distance statistics: nothing here is public API.
"""

from __future__ import annotations

import operator

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
    if not isinstance(x, jax.Array):
        # On the host, then one transfer: `jnp.asarray` of a NumPy array, a cast and a reshape
        # would each compile a small program per shape.
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        return jax.device_put(np.asarray(x, jax.dtypes.canonicalize_dtype(dtype)).reshape(x.shape[0], -1), may_alias=False)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x.reshape(x.shape[0], -1)


def check_samples(arrays, names, min_samples: int, statistic: str) -> int:
    """Raise `ValueError` unless `arrays` hold the same number (>= `min_samples`) of samples.

    `names` name the arrays in the message: ("x", "y") reads "x and y", ("x", "z", "y")
    reads "x, z and y".
    """
    counts = [a.shape[0] for a in arrays]
    if len(set(counts)) > 1:
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        got = ", ".join(map(str, counts[:-1])) + " and " + str(counts[-1])
        raise ValueError(f"{statistic}: {listed} must hold the same number of samples, got {got}")
    n = counts[0]
    if n < min_samples:
        raise ValueError(f"{statistic} needs at least {min_samples} samples, got {n}")
    return n


def check_pair(x: jax.Array, y: jax.Array, min_samples: int, statistic: str) -> int:
    """Raise `ValueError` unless `x` and `y` hold the same number (>= `min_samples`) of samples."""
    return check_samples((x, y), ("x", "y"), min_samples, statistic)


def block_rows(block_size) -> int | None:
    """`block_size` as a Python int (hashable, one jit cache entry per value), or None."""
    if block_size is None:
        return None
    # bool is an int subclass: block_size=True would silently mean one row per block.
    if not isinstance(block_size, bool):
        try:
            rows = operator.index(block_size)  # int, NumPy and JAX integer scalars; not floats
        except TypeError:
            rows = None
        if rows is not None and rows >= 1:
            return rows
    raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")


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


def distance_matrix(x: jax.Array) -> jax.Array:
    """(n, n) Euclidean distances of `x: (n, p)`, with an exactly zero diagonal."""
    x = center_features(x)
    sq = jnp.sum(x * x, axis=1)
    d = distance_rows(x, x, sq, sq)
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d)


def distance_sums(
    x: jax.Array, y: jax.Array, block_size: int | None, *, shift_diagonal: bool
):
    """The sufficient sums of two (shifted) distance matrices a = |x_i - x_j| - c_x, b likewise.

    `distance_sums_many` for two inputs, unpacked: (s_ab, s_aa, s_bb, row_a, row_b, msd_x,
    msd_y), the scalars sum_ij a_ij b_ij, sum a^2, sum b^2, the row sums `(n,)` of a and
    b, and the mean squared distances of x and y. Every distance statistic of a pair is
    a function of these.
    """
    gram, rows, msd = distance_sums_many((x, y), block_size, shift_diagonal=shift_diagonal)
    return gram[0, 1], gram[0, 0], gram[1, 1], rows[0], rows[1], msd[0], msd[1]


def distance_sums_many(samples, block_size: int | None, *, shift_diagonal: bool):
    """The sufficient sums of k (shifted) distance matrices a_m = |x_i - x_j| - c_m.

    Double centering is invariant to adding a constant to every entry (V-statistics,
    `shift_diagonal=True`) and U-centering to adding one to every off-diagonal entry
    (`shift_diagonal=False`). Subtracting about the mean distance before summing
    removes most of the cancellation that costs float32 its accuracy.

    Args:
      samples: k arrays `(n, p_m)`, the same n.
      block_size: None for whole n x n matrices, or rows per block (memory O(k n block_size)).
      shift_diagonal: whether the shift also applies to the diagonal (see above).

    Returns:
      (gram, rows, msd): `gram: (k, k)` the sums sum_ij a_l,ij a_m,ij, `rows: (k, n)` the
      row sums of each a_m, `msd: (k,)` the mean squared distance of each input (the scale
      that round-off in the sums is relative to). Every (partial) distance statistic of
      the k inputs is a function of these.
    """
    k = len(samples)
    n = samples[0].shape[0]
    xs = [center_features(x) for x in samples]
    sqs = [jnp.sum(x * x, axis=1) for x in xs]
    # sqrt(mean squared distance): near the mean distance; any constant is exact.
    msd = [jax.lax.stop_gradient(2.0 * jnp.mean(sq)) for sq in sqs]
    shifts = [jnp.sqrt(m) for m in msd]

    def block(start, rows):
        row_index = start + jnp.arange(rows)[:, None]
        # The diagonal is exactly zero; round-off in the Gram form must not leak in,
        # and padding rows (index >= n) must contribute nothing.
        valid = row_index < n
        off_diagonal = row_index != jnp.arange(n)[None, :]
        shifted = valid if shift_diagonal else valid & off_diagonal
        mats = []
        for x, x_pad, sq, sq_pad, shift in zip(xs, xs_pad, sqs, sqs_pad, shifts):
            xr = jax.lax.dynamic_slice_in_dim(x_pad, start, rows)
            a = distance_rows(xr, x, jax.lax.dynamic_slice_in_dim(sq_pad, start, rows), sq)
            mats.append(jnp.where(shifted, jnp.where(off_diagonal, a, 0.0) - shift, 0.0))
        products = {(l, m): jnp.sum(mats[l] * mats[m]) for l in range(k) for m in range(l, k)}
        gram = jnp.stack(
            [jnp.stack([products[min(l, m), max(l, m)] for m in range(k)]) for l in range(k)]
        )
        return gram, jnp.stack([jnp.sum(a, axis=1) for a in mats])

    if block_size is None or block_size >= n:
        xs_pad, sqs_pad = xs, sqs
        gram, rows = block(0, n)
        return gram, rows, jnp.stack(msd)

    rows = int(block_size)
    n_blocks = -(-n // rows)
    pad = n_blocks * rows - n
    xs_pad = [jnp.pad(x, ((0, pad), (0, 0))) for x in xs]
    sqs_pad = [jnp.pad(sq, (0, pad)) for sq in sqs]
    # Recompute each block in the backward pass instead of storing n x n residuals.
    body = jax.checkpoint(lambda start: block(start, rows))
    gram, row_sums = jax.lax.map(body, jnp.arange(n_blocks) * rows)
    # row_sums: (n_blocks, k, rows) -> (k, n)
    row_sums = jnp.moveaxis(row_sums, 1, 0).reshape(k, -1)[:, :n]
    return jnp.sum(gram, axis=0), row_sums, jnp.stack(msd)
