"""Defences that act on a message on its way: the papers' noise baseline.

The noise baseline (NoPeek paper, Fig. "trade-off"): the data holder adds noise to the
activations it sends, at training and at test time. During training one key per step
draws the noise of the whole batch; at test time the noise of sample i is drawn from
`fold_in(key, i)`, so it is the same whatever the evaluation chunk size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NOISE_KINDS = ("gaussian", "uniform")


def _draw(key: jax.Array, shape, dtype, kind: str) -> jax.Array:
    if kind == "gaussian":
        return jax.random.normal(key, shape, dtype)
    if kind == "uniform":
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")


def add_noise(z: jax.Array, key: jax.Array, scale, kind: str) -> jax.Array:
    """z + scale * N(0, 1), or + scale * U(-1, 1), for a batch z: (n, ...). Scale 0 is a no-op."""
    return z + scale * _draw(key, z.shape, z.dtype, kind)


def add_noise_per_sample(z: jax.Array, key: jax.Array, scale, kind: str, sample_index: jax.Array) -> jax.Array:
    """Like `add_noise`, but sample i's noise comes from `fold_in(key, sample_index[i])`.

    z: (n, ...); sample_index: (n,) int, the samples' positions in the whole evaluation set.
    """
    noise = jax.vmap(lambda i: _draw(jax.random.fold_in(key, i), z.shape[1:], z.dtype, kind))(sample_index)
    return z + scale * noise
