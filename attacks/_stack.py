"""Running one function over a stack of models inside one compiled program.

`over_stack(fn, mode, in_axes)` applies `fn` to each slice of the arguments whose axis is
0 and passes the others (axis None) unchanged: as a `jax.vmap`, or unrolled into
straight-line code (`mode="map"`). Unrolled, not `lax.map`: XLA:CPU runs convolutions
inside loops about 13x slower (bench/train.py), while vmapped convolutions become grouped
ones that ran 3x slower than sequential there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def resolve_stack_mode(mode: str, has_conv: bool = False) -> str:
    """'auto': vmap on accelerators and for dense-only models on the CPU; else unrolled map."""
    if mode == "auto":
        if jax.default_backend() != "cpu":
            return "vmap"
        return "map" if has_conv else "vmap"
    if mode not in ("map", "vmap"):
        raise ValueError(f"stack_mode must be 'auto', 'map' or 'vmap', got {mode!r}")
    return mode


def over_stack(fn, mode: str, in_axes):
    """`fn` mapped over the leading axis of the arguments marked 0 in `in_axes`."""
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        k = jax.tree.leaves([a for a, ax in zip(args, in_axes) if ax == 0])[0].shape[0]
        outs = []
        for i in range(k):
            sliced = (jax.tree.map(lambda a: a[i], a) if ax == 0 else a for a, ax in zip(args, in_axes))
            outs.append(fn(*sliced))
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)

    return mapped


def stack_trees(trees):
    """Stack a list of identical pytrees along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
