"""Models as ordered lists of named blocks, so "cut after block k" is defined for every model.

A model is a list of `BlockSpec`s: a name and a factory that builds the block for the
shape of one incoming sample. Building a model chains the factories, inferring each
block's input shape from the previous block's output (`jax.eval_shape`). Because of
that, any segment [start, stop) of a model can be built for any incoming shape: a
vertical-split client on its slice of the features, a server on the merge of several
clients' activations. Block k of replica r is initialised from its own key,
`fold_in(fold_in(key(seed), r), k)`, so a segment built alone has exactly the
parameters it has inside the whole model.

Bundled: `mlp`, `cnn`, `cnn_nopeek` (the NoPeek MNIST network), `resnet` (small, for
32x32 colour images; GroupNorm so every step is a pure function of the parameters),
and, for cost accounting (shapes only), `vgg16` and `resnet50`. No model applies
softmax: the loss takes logits. `register` adds a model of one's own; the CLI, the
sweep and the engine all read the one registry, `MODELS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nopeek.errors import ModelError
from nopeek.protocol._conv import conv_layer
from nopeek.protocol._norm import GroupNorm


# ---- blocks ----------------------------------------------------------------


ACTIVATIONS = {"relu": nnx.relu, "linear": lambda y: y, "tanh": jnp.tanh, "leaky_relu": nnx.leaky_relu}


def _activation_name(activation) -> str:
    if activation is True:
        return "relu"
    if activation is False:
        return "linear"
    if activation not in ACTIVATIONS:
        raise ModelError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return activation


class Dense(nnx.Module):
    """Flatten to (n, d_in), then Linear, then an activation (ReLU; `activation=False` or
    "linear" for none, or "tanh", "leaky_relu")."""

    def __init__(self, d_in: int, d_out: int, *, activation: bool | str = True, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)
        self.activation = _activation_name(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.activation](self.linear(x.reshape(x.shape[0], -1)))


class Conv(nnx.Module):
    """3x3 'SAME' convolution and an activation (ReLU by default): (n, H, W, c_in) -> (n, H, W, c_out).

    `conv` is flax's `nnx.Conv` (parameters `conv.kernel`, `conv.bias`) built by `conv_layer`:
    its kernel gradient on the CPU is summed over slices of the batch.
    """

    def __init__(self, c_in: int, c_out: int, *, activation: str = "relu", rngs: nnx.Rngs):
        self.conv = conv_layer(c_in, c_out, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.activation = _activation_name(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.activation](self.conv(x))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, on (n, H, W, C) -> (n, H//2, W//2, C) (odd edges dropped).

    Written as a reshape and a max rather than `nnx.max_pool`: the values are the same,
    and so are the gradients away from ties, but XLA:CPU runs the backward pass of this
    form about 13x faster than the select-and-scatter of a reduce-window (bench/train.py).
    At ties the gradient is shared among the tied inputs instead of given to one; after a
    ReLU the only ties are zeros, whose gradient the ReLU discards either way.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class MaxPool(nnx.Module):
    """2x2 max pooling, stride 2: (n, H, W, C) -> (n, H/2, W/2, C). No parameters."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool_2x2(x)


def _projection(c_in: int, c_out: int, stride: int, rngs: nnx.Rngs):
    """The shortcut of a residual block: a strided 1x1 convolution when the shape changes, else None."""
    if stride == 1 and c_in == c_out:
        return None
    return conv_layer(c_in, c_out, (1, 1), strides=stride, use_bias=False, rngs=rngs)


class ResidualBlock(nnx.Module):
    """Basic ResNet block, GroupNorm: (n, H, W, c_in) -> (n, H/stride, W/stride, c_out)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, rngs: nnx.Rngs):
        groups = min(8, c_out)
        self.conv1 = conv_layer(c_in, c_out, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
        self.norm1 = GroupNorm(c_out, num_groups=groups, rngs=rngs)
        self.conv2 = conv_layer(c_out, c_out, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm2 = GroupNorm(c_out, num_groups=groups, rngs=rngs)
        self.project = _projection(c_in, c_out, stride, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.project is None else self.project(x)
        return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
    """ResNet-50 bottleneck, GroupNorm: 1x1 (c/4), 3x3 (c/4, stride), 1x1 (c), plus shortcut."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, rngs: nnx.Rngs):
        mid = c_out // 4
        self.conv1 = conv_layer(c_in, mid, (1, 1), use_bias=False, rngs=rngs)
        self.norm1 = GroupNorm(mid, num_groups=min(32, mid), rngs=rngs)
        self.conv2 = conv_layer(mid, mid, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
        self.norm2 = GroupNorm(mid, num_groups=min(32, mid), rngs=rngs)
        self.conv3 = conv_layer(mid, c_out, (1, 1), use_bias=False, rngs=rngs)
        self.norm3 = GroupNorm(c_out, num_groups=min(32, c_out), rngs=rngs)
        self.project = _projection(c_in, c_out, stride, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = nnx.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        shortcut = x if self.project is None else self.project(x)
        return nnx.relu(y + shortcut)


class Stem(nnx.Module):
    """3x3 convolution, GroupNorm, ReLU: the ResNets' first block."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv = conv_layer(c_in, c_out, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm = GroupNorm(c_out, num_groups=min(8, c_out), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.norm(self.conv(x)))


class PoolHead(nnx.Module):
    """Global average pooling then a linear layer to logits: (n, H, W, C) -> (n, classes)."""

    def __init__(self, c_in: int, num_classes: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(jnp.mean(x, axis=(1, 2)))


class BlockStack(nnx.Module):
    """An ordered list of named blocks; calling it runs them in order: (n, ...) -> (n, ...)."""

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


# ---- block specifications --------------------------------------------------

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a model: its name and `make(in_shape, rngs) -> nnx.Module`.

    `in_shape` is the shape of one incoming sample (no batch axis). The module maps
    (n, *in_shape) -> (n, *out_shape); out_shape is inferred, never declared.
    """

    name: str
    make: Callable[[Shape, nnx.Rngs], nnx.Module]
    # The same block with another activation, for blocks that have one (`--cut-activation`).
    with_activation: Callable[[str], "BlockSpec"] | None = None


def _prod(shape) -> int:
    return math.prod(int(s) for s in shape)


def dense(name: str, width: int, *, activation: bool | str = True) -> BlockSpec:
    """A Dense block of `width` units on the flattened incoming sample."""
    return BlockSpec(name, lambda s, rngs: Dense(_prod(s), width, activation=activation, rngs=rngs),
                     lambda a: dense(name, width, activation=a))


def conv(name: str, width: int, *, activation: str = "relu") -> BlockSpec:
    """A 3x3 'SAME' convolution + activation (ReLU) to `width` channels on (H, W, C) samples."""
    return BlockSpec(name, lambda s, rngs: Conv(_image(s, name)[-1], width, activation=activation, rngs=rngs),
                     lambda a: conv(name, width, activation=a))


def with_cut_activation(blocks: Sequence[BlockSpec], cut: int, activation: str) -> list[BlockSpec]:
    """The blocks with block `cut` (1-based: the one whose output crosses) given `activation`."""
    block = blocks[cut - 1]
    if block.with_activation is None:
        raise ModelError(f"--cut-activation: block {block.name!r} before cut {cut} has no activation to change "
                         "(choose a cut after a dense or convolution block)")
    _activation_name(activation)
    return [*blocks[: cut - 1], block.with_activation(activation), *blocks[cut:]]


def _image(shape, name) -> Shape:
    if len(shape) != 3:
        raise ModelError(f"block {name!r} needs image samples (H, W, C), got sample shape {tuple(shape)}")
    return tuple(shape)


def _widths(widths, default, count: int | None, model: str) -> tuple[int, ...]:
    widths = tuple(widths) or tuple(default)
    if count is not None and len(widths) != count:
        raise ModelError(f"--widths: {model} takes {count} widths, got {len(widths)} ({','.join(map(str, widths))})")
    if any(int(w) < 1 for w in widths):
        raise ModelError(f"--widths must be positive, got {','.join(map(str, widths))}")
    return widths


def _no_widths(widths, model: str) -> None:
    if tuple(widths):
        raise ModelError(f"--widths: {model} has a fixed layout and takes no widths, got {','.join(map(str, widths))}")


def mlp_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """fc1..fcK (Dense + ReLU; widths default (128, 64)), head (Dense to logits)."""
    widths = _widths(widths, (128, 64), None, "mlp")
    blocks = [dense(f"fc{i + 1}", w) for i, w in enumerate(widths)]
    return blocks + [dense("head", num_classes, activation=False)]


def cnn_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """conv1, conv2, pool, fc1, fc2, head; widths = (conv1, conv2, fc1, fc2), default (16, 32, 128, 64)."""
    c1, c2, d1, d2 = _widths(widths, (16, 32, 128, 64), 4, "cnn")
    return [
        conv("conv1", c1), conv("conv2", c2), BlockSpec("pool", lambda s, rngs: MaxPool()),
        dense("fc1", d1), dense("fc2", d2), dense("head", num_classes, activation=False),
    ]


def cnn_nopeek_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """The NoPeek MNIST network: conv 32, conv 64, pool, dense 500 | dense 128, dense 10."""
    return cnn_blocks(num_classes, _widths(widths, (32, 64, 500, 128), 4, "cnn_nopeek"))


def resnet_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """stem, stage1, stage2 (stride 2), stage3 (stride 2), head; widths default (16, 32, 64)."""
    w1, w2, w3 = _widths(widths, (16, 32, 64), 3, "resnet")
    return [
        BlockSpec("stem", lambda s, rngs: Stem(_image(s, "stem")[-1], w1, rngs=rngs)),
        BlockSpec("stage1", lambda s, rngs: ResidualBlock(s[-1], w1, rngs=rngs)),
        BlockSpec("stage2", lambda s, rngs: ResidualBlock(s[-1], w2, stride=2, rngs=rngs)),
        BlockSpec("stage3", lambda s, rngs: ResidualBlock(s[-1], w3, stride=2, rngs=rngs)),
        BlockSpec("head", lambda s, rngs: PoolHead(s[-1], num_classes, rngs=rngs)),
    ]


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """VGG-16 for 32x32 inputs (Simonyan & Zisserman 2015, configuration D): 13 convs in 5
    stages each ending in a 2x2 max pool, then dense 512, dense 512, head. The layout is fixed. Blocks: conv1_1 .. pool5, fc1, fc2, head."""
    _no_widths(widths, "vgg16")
    blocks, stage, index = [], 1, 1
    for item in _VGG16:
        if item == "M":
            blocks.append(BlockSpec(f"pool{stage}", lambda s, rngs: MaxPool()))
            stage, index = stage + 1, 1
        else:
            blocks.append(conv(f"conv{stage}_{index}", item))
            index += 1
    return blocks + [dense("fc1", 512), dense("fc2", 512), dense("head", num_classes, activation=False)]


_RESNET50_STAGES = ((256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2))


def resnet50_blocks(num_classes: int, widths=()) -> list[BlockSpec]:
    """ResNet-50 for 32x32 inputs (He et al. 2016; CIFAR stem: one 3x3 conv, no max pool):
    stem (64), 16 bottleneck blocks in stages of 3, 4, 6, 3 (256..2048 channels), head.
    GroupNorm instead of BatchNorm. Blocks: stem, s1b1 .. s4b3, head."""
    _no_widths(widths, "resnet50")
    blocks = [BlockSpec("stem", lambda s, rngs: Stem(_image(s, "stem")[-1], 64, rngs=rngs))]
    for stage, (width, count, stride) in enumerate(_RESNET50_STAGES, start=1):
        for b in range(count):
            st = stride if b == 0 else 1
            blocks.append(BlockSpec(
                f"s{stage}b{b + 1}", lambda s, rngs, w=width, st=st: Bottleneck(s[-1], w, stride=st, rngs=rngs)
            ))
    return blocks + [BlockSpec("head", lambda s, rngs: PoolHead(s[-1], num_classes, rngs=rngs))]


# ---- the registry ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: `blocks(num_classes, widths) -> [BlockSpec]`, a default cut, a description."""

    blocks: Callable[..., list[BlockSpec]]
    default_cut: int
    description: str


MODELS: dict[str, ModelSpec] = {}


def register(name: str, blocks: Callable[..., list[BlockSpec]], *, default_cut: int = 1, description: str = "") -> None:
    """Make model `name` available to `nopeek train`, `sweep`, `attack` and the Python API.

    Args:
      name: the `--model` value.
      blocks: `blocks(num_classes, widths) -> list[BlockSpec]`: the model's blocks in order,
        each a name and a factory `make(in_shape, rngs) -> nnx.Module` (see `BlockSpec`).
        The last block must produce logits (n, num_classes); a cut k means "after block k".
      default_cut: the cut used when none is given (1 <= default_cut < number of blocks).
    """
    if not name or not isinstance(name, str):
        raise ModelError(f"a model name must be a non-empty string, got {name!r}")
    MODELS[name] = ModelSpec(blocks, int(default_cut), description or (blocks.__doc__ or "").split("\n")[0])


register("mlp", mlp_blocks, default_cut=1, description="dense layers; widths = hidden sizes (default 128,64)")
register("cnn", cnn_blocks, default_cut=4, description="conv,conv,pool,dense,dense,head; widths = 4 ints (default 16,32,128,64)")
register("cnn_nopeek", cnn_nopeek_blocks, default_cut=4,
         description="NoPeek MNIST network: conv 32, conv 64, pool, dense 500 | dense 128, dense 10")
register("resnet", resnet_blocks, default_cut=2, description="small ResNet for 32x32 colour images; widths = 3 stage widths")
register("vgg16", vgg16_blocks, default_cut=2, description="VGG-16 for 32x32 colour images (cost accounting)")
register("resnet50", resnet50_blocks, default_cut=1, description="ResNet-50 for 32x32 colour images (cost accounting)")


def model_blocks(name: str, num_classes: int, widths=()) -> list[BlockSpec]:
    """The block specs of registered model `name`."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    blocks = MODELS[name].blocks(num_classes, tuple(widths))
    if len(blocks) < 2:
        raise ModelError(f"model {name!r} has {len(blocks)} block(s); a split model needs at least 2")
    return blocks


def block_key(seed: int, block: int, replica: int = 0) -> jax.Array:
    """The key that initialises block `block` of replica `replica` of a model seeded `seed`."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), replica), block)


def out_shape(module: nnx.Module, in_shape: Shape, dtype=jnp.float32) -> Shape:
    """Per-sample output shape of `module` for per-sample input `in_shape`, from shapes only."""
    graphdef, state = nnx.split(module)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((1, *in_shape), dtype))
    return tuple(out.shape[1:])


def build_segment(
    blocks: Sequence[BlockSpec], in_shape: Shape, start: int, stop: int, *, seed: int = 0, replica: int = 0
) -> tuple[BlockStack, Shape]:
    """Blocks [start, stop) built for incoming samples of `in_shape`.

    Returns:
      (segment, out_shape): the BlockStack and the per-sample shape it produces.
    """
    modules, shape = [], tuple(in_shape)
    for k in range(start, stop):
        module = blocks[k].make(shape, nnx.Rngs(block_key(seed, k, replica)))
        try:
            shape = out_shape(module, shape)
        except (TypeError, ValueError) as err:
            raise ModelError(f"block {blocks[k].name!r} cannot take samples of shape {shape}: {err}") from err
        if 0 in shape:
            raise ModelError(f"block {blocks[k].name!r} leaves samples of shape {shape}: the input {tuple(in_shape)} "
                             "is too small for this model")
        modules.append(module)
    return BlockStack(modules, [b.name for b in blocks[start:stop]]), shape


def build_model(name: str, input_shape, num_classes: int, widths=(), *, seed: int = 0) -> BlockStack:
    """Build registered model `name` for samples of `input_shape` (no batch axis), seeded."""
    blocks = model_blocks(name, num_classes, widths)
    model, shape = build_segment(blocks, tuple(input_shape), 0, len(blocks), seed=seed)
    if shape != (num_classes,):
        raise ModelError(f"model {name!r} ends in shape {shape}, not logits ({num_classes},)")
    return model


def check_logits(name: str, input_shape, num_classes: int, widths=()) -> None:
    """Raise ModelError unless registered model `name` maps samples of `input_shape` to logits
    (num_classes,); from shapes only (`jax.eval_shape`), nothing is initialised."""
    blocks = model_blocks(name, num_classes, widths)
    shape = []
    jax.eval_shape(lambda: shape.append(build_segment(blocks, tuple(input_shape), 0, len(blocks))[1]))
    if shape[0] != (num_classes,):
        raise ModelError(f"model {name!r} ends in shape {shape[0]}, not logits ({num_classes},)")


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
    cuts, shape = [], tuple(input_shape)
    for k, (name, block) in enumerate(zip(model.names[:-1], list(model.blocks)[:-1]), start=1):
        shape = out_shape(block, shape)
        cuts.append(CutInfo(k, name, shape, _prod(shape) * 4))
    return cuts
