"""Running one function over a stack of models inside one compiled program.

`over_stack(fn, mode, in_axes)` applies `fn` to each slice of the arguments whose axis is
0 and passes the others (axis None) unchanged: as a `jax.vmap`, or unrolled into
straight-line code (`mode="map"`). Unrolled, not `lax.map`: XLA:CPU runs convolutions
inside loops about 13x slower (bench/train.py), while vmapped convolutions become grouped
ones that ran 3x slower than sequential there. Training infrastructure: `nopeek.train`
stacks split models with it and `attacks.fit_decoders` stacks decoders (it takes the
mapping function as an argument, so `attacks` never imports `nopeek`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

STACK_MODES = ("auto", "map", "vmap")


def resolve_stack_mode(mode: str, has_conv: bool = False) -> str:
    """'auto': vmap on accelerators and for dense-only models on the CPU; else unrolled map."""
    if mode == "auto":
        if jax.default_backend() != "cpu":
            return "vmap"
        return "map" if has_conv else "vmap"
    if mode not in ("map", "vmap"):
        raise ValueError(f"stack_mode must be one of {', '.join(STACK_MODES)}, got {mode!r}")
    return mode


class ModelList(tuple):
    """K models' pytrees side by side, for `mode="map"`: no stacked arrays, so an unrolled
    step reads and writes each model's buffers in place instead of slicing and re-stacking
    them every step (a copy that cost 40% of a small convnet's step on the CPU)."""


jax.tree_util.register_pytree_node(ModelList, lambda t: (tuple(t), None), lambda _, children: ModelList(children))


def stack_models(trees, mode: str):
    """K pytrees as one stack: arrays with a leading axis K (vmap) or a ModelList (map)."""
    return ModelList(trees) if mode == "map" else stack_trees(trees)


def _tracing(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


# Outside a trace, one program for a whole tree (k an argument), not one small program per leaf
# shape that eager indexing and stacking compile.
_slice_leaves = jax.jit(lambda tree, k: jax.tree.map(lambda a: a[k], tree))
_stack_leaves = jax.jit(lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees))


def model_at(tree, k: int):
    """Model k of a stack (a ModelList entry, or slice k of every leaf)."""
    if isinstance(tree, ModelList):
        return tree[k]
    if _tracing(tree):
        return jax.tree.map(lambda a: a[k], tree)
    return _slice_leaves(tree, k)


def model_count(tree) -> int:
    return len(tree) if isinstance(tree, ModelList) else jax.tree.leaves(tree)[0].shape[0]


def over_stack(fn, mode: str, in_axes, *, per_model_outputs=()):
    """`fn` mapped over the stack axis of the arguments marked 0 in `in_axes`.

    vmap: `jax.vmap`. map: unrolled, one call per model; an argument marked 0 is a
    ModelList or a pytree with a leading axis K. The outputs are stacked along a new
    leading axis, except the top-level outputs listed in `per_model_outputs`, which map
    mode returns as a ModelList (the models' states).
    """
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        k = model_count(next(a for a, ax in zip(args, in_axes) if ax == 0))
        outs = [fn(*(model_at(a, i) if ax == 0 else a for a, ax in zip(args, in_axes))) for i in range(k)]
        if not isinstance(outs[0], tuple):
            return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)
        return tuple(
            ModelList(o[j] for o in outs) if j in per_model_outputs else jax.tree.map(lambda *leaves: jnp.stack(leaves), *(o[j] for o in outs))
            for j in range(len(outs[0]))
        )

    return mapped


def device_count() -> int:
    return len(jax.devices())


def padded_size(k: int) -> int:
    """The stack size to train K models on the available devices: K rounded up to a multiple
    of the device count, so every device holds as many models (the padding is dropped)."""
    d = device_count()
    return k if d == 1 else -(-k // d) * d


def shard_models(tree):
    """Place a stacked pytree (leading axis K on every leaf) with the K axis split over the
    devices (a one-axis mesh "models"); a no-op on one device or for a ModelList. A jitted
    function of sharded stacks runs each device's models there (SPMD over the models axis)."""
    d = device_count()
    if d == 1 or isinstance(tree, ModelList):
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(jax.devices(), ("models",))

    def place(a):
        a = jnp.asarray(a)
        if a.ndim == 0 or a.shape[0] % d:
            return jax.device_put(a, NamedSharding(mesh, PartitionSpec()))
        return jax.device_put(a, NamedSharding(mesh, PartitionSpec("models")))

    return jax.tree.map(place, tree)


def stack_trees(trees):
    """Stack a list of identical pytrees along a new leading axis."""
    trees = list(trees)
    if _tracing(trees):
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    return _stack_leaves(trees)


def take(tree, k: int):
    """Model k of a stack (alias of `model_at`)."""
    return model_at(tree, k)
