"""Models as ordered lists of named blocks, so "cut after block k" is defined for every model.

`mlp` (flat or image inputs), `cnn` (conv + pool + dense; small default widths),
`cnn_nopeek` (the NoPeek MNIST network: conv 32, conv 64, pool, dense 500 | dense 128,
dense 10), `resnet` (a small ResNet for 32x32 colour images, GroupNorm instead of
BatchNorm so every step stays a pure function of parameters). No model applies softmax:
the loss takes logits.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class Dense(nnx.Module):
    """Flatten to (n, d_in), then Linear, then ReLU unless `activation=False`."""

    def __init__(self, d_in: int, d_out: int, *, activation: bool = True, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.linear(x.reshape(x.shape[0], -1))
        return nnx.relu(y) if self.activation else y


class Conv(nnx.Module):
    """3x3 'SAME' convolution and ReLU: (n, H, W, c_in) -> (n, H, W, c_out)."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, kernel_size=(3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.conv(x))


class MaxPool(nnx.Module):
    """2x2 max pooling, stride 2: (n, H, W, C) -> (n, H/2, W/2, C). No parameters."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


class ResidualBlock(nnx.Module):
    """Basic ResNet block, GroupNorm: (n, H, W, c_in) -> (n, H/stride, W/stride, c_out)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, rngs: nnx.Rngs):
        groups = min(8, c_out)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
        self.norm1 = nnx.GroupNorm(c_out, num_groups=groups, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm2 = nnx.GroupNorm(c_out, num_groups=groups, rngs=rngs)
        self.project = (
            nnx.Conv(c_in, c_out, (1, 1), strides=stride, use_bias=False, rngs=rngs)
            if stride != 1 or c_in != c_out
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.project is None else self.project(x)
        return nnx.relu(y + shortcut)


class Stem(nnx.Module):
    """3x3 convolution, GroupNorm, ReLU: the ResNet's first block."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm = nnx.GroupNorm(c_out, num_groups=min(8, c_out), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.norm(self.conv(x)))


class PoolHead(nnx.Module):
    """Global average pooling then a linear layer to logits: (n, H, W, C) -> (n, classes)."""

    def __init__(self, c_in: int, num_classes: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(jnp.mean(x, axis=(1, 2)))


class BlockStack(nnx.Module):
    """An ordered list of named blocks; calling it runs them in order."""

    def __init__(self, blocks: Sequence[nnx.Module], names: Sequence[str]):
        if len(blocks) != len(names):
            raise ValueError("one name per block")
        self.blocks = nnx.List(list(blocks))
        self.names = tuple(names)

    def __len__(self) -> int:
        return len(self.blocks)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x

    def part(self, start: int, stop: int) -> "BlockStack":
        """Blocks [start, stop) as their own stack (sharing the block objects)."""
        return BlockStack(list(self.blocks)[start:stop], self.names[start:stop])


# ---- builders --------------------------------------------------------------


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def build_mlp(input_shape, num_classes, widths=(), *, rngs):
    """fc1..fcK (Dense + ReLU, widths default (128, 64)), head (Dense to logits)."""
    widths = tuple(widths) or (128, 64)
    sizes = (_prod(input_shape), *widths)
    blocks = [Dense(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    blocks.append(Dense(sizes[-1], num_classes, activation=False, rngs=rngs))
    return BlockStack(blocks, [f"fc{i + 1}" for i in range(len(widths))] + ["head"])


def build_cnn(input_shape, num_classes, widths=(), *, rngs):
    """conv1, conv2, pool, fc1, fc2, head. widths = (conv1, conv2, fc1, fc2), default (16, 32, 128, 64)."""
    c1, c2, d1, d2 = tuple(widths) or (16, 32, 128, 64)
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image inputs (H, W, C), got sample shape {tuple(input_shape)}")
    h, w, c = input_shape
    flat = (h // 2) * (w // 2) * c2
    blocks = [
        Conv(c, c1, rngs=rngs),
        Conv(c1, c2, rngs=rngs),
        MaxPool(),
        Dense(flat, d1, rngs=rngs),
        Dense(d1, d2, rngs=rngs),
        Dense(d2, num_classes, activation=False, rngs=rngs),
    ]
    return BlockStack(blocks, ["conv1", "conv2", "pool", "fc1", "fc2", "head"])


def build_cnn_nopeek(input_shape, num_classes, widths=(), *, rngs):
    """The NoPeek MNIST network: conv 32, conv 64, pool, dense 500 | dense 128, dense 10."""
    return build_cnn(input_shape, num_classes, tuple(widths) or (32, 64, 500, 128), rngs=rngs)


def build_resnet(input_shape, num_classes, widths=(), *, rngs):
    """stem, stage1, stage2 (stride 2), stage3 (stride 2), head. widths default (16, 32, 64)."""
    w1, w2, w3 = tuple(widths) or (16, 32, 64)
    if len(input_shape) != 3:
        raise ValueError(f"resnet needs image inputs (H, W, C), got sample shape {tuple(input_shape)}")
    c = input_shape[-1]
    blocks = [
        Stem(c, w1, rngs=rngs),
        ResidualBlock(w1, w1, rngs=rngs),
        ResidualBlock(w1, w2, stride=2, rngs=rngs),
        ResidualBlock(w2, w3, stride=2, rngs=rngs),
        PoolHead(w3, num_classes, rngs=rngs),
    ]
    return BlockStack(blocks, ["stem", "stage1", "stage2", "stage3", "head"])


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build a model, and where to cut it when no cut is given."""

    build: Callable[..., BlockStack]
    default_cut: int
    description: str


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(build_mlp, 1, "dense layers; widths = hidden sizes (default 128,64)"),
    "cnn": ModelSpec(build_cnn, 4, "conv,conv,pool,dense,dense,head; widths = 4 ints (default 16,32,128,64)"),
    "cnn_nopeek": ModelSpec(build_cnn_nopeek, 4, "NoPeek MNIST network: conv 32, conv 64, pool, dense 500 | dense 128, dense 10"),
    "resnet": ModelSpec(build_resnet, 2, "small ResNet for 32x32 colour images; widths = 3 stage widths"),
}


def build_model(name: str, input_shape, num_classes: int, widths=(), *, seed: int = 0) -> BlockStack:
    """Build model `name` for samples of `input_shape` (no batch axis), seeded."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name].build(tuple(input_shape), num_classes, tuple(widths), rngs=nnx.Rngs(seed))


@dataclasses.dataclass(frozen=True)
class CutInfo:
    """One possible cut: after block `cut` (1-based), named `block`, with its activation shape."""

    cut: int
    block: str
    shape: tuple[int, ...]
    bytes_per_sample: int


def list_cuts(model: BlockStack, input_shape) -> list[CutInfo]:
    """Every valid cut (after blocks 1..L-1) with its activation shape, via `jax.eval_shape`.

    Nothing is computed: shapes come from abstract evaluation.
    """
    graphdef, state = nnx.split(model)
    spec = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)

    def activations(state, x):
        m = nnx.merge(graphdef, state)
        outs = []
        for block in m.blocks:
            x = block(x)
            outs.append(x)
        return outs

    shapes = jax.eval_shape(activations, state, spec)
    cuts = []
    for k, (name, s) in enumerate(zip(model.names[:-1], shapes[:-1]), start=1):
        per_sample = tuple(s.shape[1:])
        cuts.append(CutInfo(k, name, per_sample, _prod(per_sample) * s.dtype.itemsize))
    return cuts
