"""The malicious server's networks in FSHA, shaped after the client's message.

FSHA's server holds a pilot encoder f~ (public inputs -> a feature space it chooses), its
inverse f~^-1 (the decoder) and a critic D on messages. For a spatial message (h, w, c)
of inputs (h * 2^k, w * 2^k, C) they are convolutional, after the authors' code (split
level 4 of `architectures.py`): the pilot is k stride-2 convolutions with swish, then a
linear convolution to c channels; the decoder k x2 upsamplings with ReLU to a sigmoid
output; D a convolution, residual blocks without normalisation, a stride-2 convolution and
a dense score. Narrower than the authors' (width 32 instead of 64-256, 2 residual blocks
instead of 6, sub-pixel upsampling instead of transposed convolutions, D's first
convolution strided on messages of 8x8 and more) so that thousands of iterations fit on a
CPU. Any other message gets dense networks on the flattened message.

References: Pasquini, Ateniese, Bernaschi, "Unleashing the tiger: inference attacks on
split learning", CCS 2021 (code: github.com/pasquini-dario/SplitNN_FSHA).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from attacks import spatial_stages
from nopeek.core import NumpyStream, numpy_rng

PILOT_OUTPUTS = ("auto", "linear", "relu")


def _conv(c_in, c_out, rngs, stride=1):
    return nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding="SAME", rngs=rngs)


def depth_to_space(h: jax.Array) -> jax.Array:
    """(n, h, w, 4c) -> (n, 2h, 2w, c): each group of 4 channels becomes a 2x2 patch."""
    n, hh, ww, c4 = h.shape
    c = c4 // 4
    return h.reshape(n, hh, ww, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * hh, 2 * ww, c)


class ConvPilot(nnx.Module):
    """x (n, H, W, C) -> (n, h, w, c): k stride-2 convs (swish), a conv (swish), a linear conv."""

    def __init__(self, x_shape, z_shape, stages: int, width: int, output: str, *, rngs: nnx.Rngs):
        c_in = x_shape[-1]
        layers, w = [], width
        for i in range(stages):
            w = width * 2 ** min(i, 2)
            layers.append(_conv(c_in, w, rngs, stride=2))
            c_in = w
        layers.append(_conv(c_in, w, rngs))
        self.layers = nnx.List(layers)
        self.out = _conv(w, z_shape[-1], rngs)
        self.relu_out = output == "relu"

    def __call__(self, x):
        for layer in self.layers:
            x = nnx.swish(layer(x))
        z = self.out(x)
        return nnx.relu(z) if self.relu_out else z


class ConvInverse(nnx.Module):
    """z (n, h, w, c) -> x (n, H, W, C) in [0, 1]: a conv (ReLU), k sub-pixel x2 upsamplings
    (ReLU; the last one to C channels), sigmoid."""

    def __init__(self, z_shape, x_shape, stages: int, width: int, *, rngs: nnx.Rngs):
        widths = [width * 2 ** min(stages - 1 - i, 2) for i in range(stages)] or [width]
        self.inp = _conv(z_shape[-1], widths[0], rngs)
        ups, c_in = [], widths[0]
        for i in range(stages):
            c_out = widths[i + 1] if i + 1 < stages else x_shape[-1]
            ups.append(_conv(c_in, 4 * c_out, rngs))
            c_in = c_out
        self.ups = nnx.List(ups)
        self.out = None if stages else _conv(c_in, x_shape[-1], rngs)

    def __call__(self, z):
        h = nnx.relu(self.inp(z))
        for i, layer in enumerate(self.ups):
            h = depth_to_space(layer(h))
            if i + 1 < len(self.ups):
                h = nnx.relu(h)
        if self.out is not None:
            h = self.out(h)
        return nnx.sigmoid(h)


class ResBlock(nnx.Module):
    """The authors' residual block without normalisation: x + conv(relu(conv(relu(x))))."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(width, width, rngs)
        self.conv2 = _conv(width, width, rngs)

    def __call__(self, x):
        return x + self.conv2(nnx.relu(self.conv1(nnx.relu(x))))


class ConvCritic(nnx.Module):
    """z (n, h, w, c) -> (n, 1): conv (stride 2 on 8x8 and larger), residual blocks, a
    stride-2 conv, dense to one score (linear: a WGAN critic)."""

    def __init__(self, z_shape, width: int, res_blocks: int, *, rngs: nnx.Rngs):
        h, w, c = z_shape
        first_stride = 2 if min(h, w) >= 8 else 1
        self.inp = _conv(c, width, rngs, stride=first_stride)
        self.blocks = nnx.List([ResBlock(width, rngs=rngs) for _ in range(res_blocks)])
        self.down = _conv(width, width, rngs, stride=2)
        hh, ww = -(-h // first_stride), -(-w // first_stride)
        self.score = nnx.Linear(-(-hh // 2) * -(-ww // 2) * width, 1, rngs=rngs)

    def __call__(self, z):
        h = self.inp(z)
        for block in self.blocks:
            h = block(h)
        h = self.down(h)
        return self.score(h.reshape(h.shape[0], -1))


class DenseNet(nnx.Module):
    """Flattened input -> two hidden layers -> out_shape, with the given hidden and output activations."""

    def __init__(self, d_in: int, out_shape, width: int, hidden, output, *, rngs: nnx.Rngs):
        self.out_shape = tuple(out_shape)
        self.l1 = nnx.Linear(d_in, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.l3 = nnx.Linear(width, math.prod(self.out_shape), rngs=rngs)
        self.hidden, self.output = hidden, output

    def __call__(self, v):
        h = self.hidden(self.l1(v.reshape(v.shape[0], -1)))
        h = self.hidden(self.l2(h))
        return self.output(self.l3(h)).reshape(v.shape[0], *self.out_shape)


def attacker_networks(z_shape, x_shape, *, width: int = 32, res_blocks: int = 2, pilot_output: str = "linear",
                      seed: int = 0) -> dict[str, nnx.Module]:
    """{"pilot", "decoder", "critic"} for messages of per-sample shape `z_shape` and inputs
    of `x_shape` (convolutional when `spatial_stages` finds k, dense otherwise).

    pilot_output: "linear", or "relu" when the client's messages are non-negative (the
    critic would otherwise tell them apart by their sign alone)."""
    if pilot_output not in ("linear", "relu"):
        raise ValueError(f"pilot_output must be linear or relu, got {pilot_output!r}")

    # Built from shapes only and initialised with NumPy (LeCun normal kernels, zero biases, as
    # Flax's defaults): compiling JAX's random initialisers took seconds per layer shape here.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: _networks(z_shape, x_shape, width, res_blocks, pilot_output)))
    rng = numpy_rng(seed, NumpyStream.DISHONEST_NETS)

    def init(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
        if "kernel" in names:
            fan_in = math.prod(leaf.shape[:-1])
            return jnp.asarray(rng.normal(0.0, math.sqrt(1.0 / fan_in), leaf.shape), leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, abstract))


def _networks(z_shape, x_shape, width, res_blocks, pilot_output):
    keys = [nnx.Rngs(i) for i in range(3)]  # shapes only: the values come from `attacker_networks`
    stages = spatial_stages(tuple(z_shape), tuple(x_shape))
    if stages is not None:
        return {
            "pilot": ConvPilot(x_shape, z_shape, stages, width, pilot_output, rngs=keys[0]),
            "decoder": ConvInverse(z_shape, x_shape, stages, width, rngs=keys[1]),
            "critic": ConvCritic(z_shape, width, res_blocks, rngs=keys[2]),
        }
    hidden = 8 * width
    d_x, d_z = math.prod(x_shape), math.prod(z_shape)
    out = nnx.relu if pilot_output == "relu" else (lambda v: v)
    return {
        "pilot": DenseNet(d_x, z_shape, hidden, nnx.swish, out, rngs=keys[0]),
        "decoder": DenseNet(d_z, x_shape, hidden, nnx.relu, nnx.sigmoid, rngs=keys[1]),
        "critic": DenseNet(d_z, (1,), hidden, nnx.relu, lambda v: v, rngs=keys[2]),
    }


def gradient_penalty(critic_fn, z_priv, z_pub, key) -> jax.Array:
    """WGAN-GP at random interpolates of private and public messages, as the authors' code
    computes it: for spatial messages the gradient's norm is taken over the spatial axes,
    one per (sample, channel); for flat ones over the sample. mean((norm - 1)^2)."""
    eps = jax.random.uniform(key, (z_priv.shape[0],) + (1,) * (z_priv.ndim - 1), z_priv.dtype)
    z_hat = eps * z_priv + (1 - eps) * z_pub
    grad = jax.grad(lambda z: jnp.sum(critic_fn(z)))(z_hat)
    axes = (1, 2) if grad.ndim == 4 else tuple(range(1, grad.ndim))
    norm = jnp.sqrt(jnp.sum(grad**2, axis=axes) + 1e-12)
    return jnp.mean((norm - 1.0) ** 2)
