"""The networks an attacker trains besides an inversion decoder: a substitute client, a
label head, discriminators, and a decoder that also reads the label.

Every network is built from the shapes of what it reads (an image (H, W, C) or a flat
vector (d,), a message of any shape), so one attack works at any cut of any model:

- `SubstituteClient`: x -> a message of z's shape, without the client's architecture
  (FORA's substitute, or SDAR's simulator when the attacker does not know the
  architecture): 3x3 convolutions, stride 2 down to z's resolution for spatial z, or a
  dense 128 and a dense layer to d_z for flat z.
- `Head`: a message or server output -> logits (global average pooling first when it is
  spatial): the label head an attacker trains in U-shaped split learning.
- `Discriminator`: anything -> one logit, optionally conditioned on a label (SDAR's
  discriminators): stride-2 convolutions for images and spatial tensors, two dense layers
  for flat ones, leaky ReLU, dropout before the last layer. The label enters as a learnt
  embedding concatenated to a flat input, or projected to one extra channel of a spatial
  one (the SDAR code's conditioning).
- `LabelledDecoder`: (z, y) -> x_hat, `attacks.decoder`'s decoder on z with the label
  added the same way.

Dropout takes its key explicitly (`key=None`: off), so every step stays a pure function
of parameters, data and a key.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attacks.decoder import build_decoder, rngs_for, spatial_stages

EMBED = 50  # the label embedding's width (the SDAR code's)


def _is_image(shape) -> bool:
    return len(tuple(shape)) == 3


def dropout(h: jax.Array, rate: float, key) -> jax.Array:
    """Inverted dropout of `h` at `rate` with `key`; the identity when key is None."""
    if key is None or rate <= 0:
        return h
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


class SubstituteClient(nnx.Module):
    """x (n, *x_shape) -> z (n, *z_shape): a client of the attacker's own design.

    Images: a 3x3 convolution, then k stride-2 ones when z is (h, w, c) with the input's
    resolution 2^k times z's, and a 3x3 convolution to z's channels; otherwise (flat z,
    or tabular x) a stride-2 convolution for images, a dense 128 and a dense layer to z's
    size. The output is linear, or ReLU'd when `nonnegative` (the messages the attacker
    receives never go below 0). `nonnegative` is a value of the module's state
    (`relu_output`, 1.0 or 0.0, never trained), not of its structure, so the K clients of a
    stack may differ in it (`with_relu_outputs`) and still share one program.
    """

    def __init__(self, x_shape, z_shape, *, width: int = 16, hidden: int = 128, nonnegative: bool = False,
                 rngs: nnx.Rngs):
        self.x_shape, self.z_shape = tuple(x_shape), tuple(z_shape)
        self.relu_output = nnx.Variable(jnp.asarray(1.0 if nonnegative else 0.0, jnp.float32))
        stages = spatial_stages(self.z_shape, self.x_shape) if _is_image(self.x_shape) else None
        self.spatial = stages is not None
        self.convs = nnx.List([])
        shape = self.x_shape
        if _is_image(shape):
            self.convs.append(nnx.Conv(shape[-1], width, (3, 3), padding="SAME", rngs=rngs))
            shape = (*shape[:2], width)
            for _ in range(stages if self.spatial else 1):
                self.convs.append(nnx.Conv(shape[-1], 2 * width, (3, 3), strides=2, padding="SAME", rngs=rngs))
                shape = (-(-shape[0] // 2), -(-shape[1] // 2), 2 * width)
        if self.spatial:
            self.out = nnx.Conv(shape[-1], self.z_shape[-1], (3, 3), padding="SAME", rngs=rngs)
        else:
            self.hidden = nnx.Linear(math.prod(shape), hidden, rngs=rngs)
            self.out = nnx.Linear(hidden, math.prod(self.z_shape), rngs=rngs)

    def __call__(self, x):
        h = x
        for conv in self.convs:
            h = nnx.relu(conv(h))
        if self.spatial:
            z = self.out(h)
        else:
            h = nnx.relu(self.hidden(h.reshape(h.shape[0], -1)))
            z = self.out(h).reshape(h.shape[0], *self.z_shape)
        return jnp.where(self.relu_output[...] > 0, nnx.relu(z), z)


def nonnegative_messages(z) -> np.ndarray:
    """(K,) bool: whether each model's messages (K, n, ...) never go below 0."""
    z = np.asarray(z)
    return np.all(z.reshape(len(z), -1) >= 0, axis=1)


def with_relu_outputs(params, nonnegative):
    """`SubstituteClient` parameters stacked over K with each client's `relu_output` set from
    `nonnegative` (K,) bool: one model's design never depends on the others of its stack."""
    flags = jnp.asarray(np.asarray(nonnegative, np.float32))

    def put(path, leaf):
        return flags.reshape(leaf.shape) if any(getattr(p, "key", None) == "relu_output" for p in path) else leaf

    return jax.tree_util.tree_map_with_path(put, params)


class Head(nnx.Module):
    """Features (n, *shape) -> logits (n, classes): a dense layer, after global average
    pooling when the features are spatial (the head of the SDAR code's U-shaped client)."""

    def __init__(self, shape, classes: int, *, rngs: nnx.Rngs):
        self.pool = _is_image(shape)
        d = shape[-1] if self.pool else math.prod(shape)
        self.dense = nnx.Linear(d, classes, rngs=rngs)

    def __call__(self, h):
        h = h.mean(axis=(1, 2)) if self.pool else h.reshape(h.shape[0], -1)
        return self.dense(h)


class _Label(nnx.Module):
    """A label y (n,) -> an embedding (n, 50) to concatenate to a flat input, or one channel
    (n, H, W, 1) to add to a spatial one."""

    def __init__(self, shape, classes: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(classes, EMBED, rngs=rngs)
        self.spatial = _is_image(shape)
        self.shape = tuple(shape)
        if self.spatial:
            self.project = nnx.Linear(EMBED, shape[0] * shape[1], rngs=rngs)

    def join(self, h, y):
        e = self.embed(y)
        if self.spatial:
            channel = self.project(e).reshape(h.shape[0], self.shape[0], self.shape[1], 1)
            return jnp.concatenate([h, channel], axis=-1)
        return jnp.concatenate([h.reshape(h.shape[0], -1), e], axis=-1)

    def joined_shape(self):
        if self.spatial:
            return (*self.shape[:2], self.shape[2] + 1)
        return (math.prod(self.shape) + EMBED,)


class Discriminator(nnx.Module):
    """Samples (n, *shape) [and labels (n,)] -> (n,) logits ("real" high)."""

    def __init__(self, shape, *, classes: int | None = None, width: int = 64, rate: float = 0.4, rngs: nnx.Rngs):
        self.label = _Label(shape, classes, rngs=rngs) if classes else None
        shape = self.label.joined_shape() if self.label is not None else tuple(shape)
        self.rate = rate
        self.spatial = _is_image(shape)
        if self.spatial:
            self.l1 = nnx.Conv(shape[-1], width, (3, 3), strides=2, padding="SAME", rngs=rngs)
            self.l2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, padding="SAME", rngs=rngs)
            d = -(-shape[0] // 4) * -(-shape[1] // 4) * 2 * width
        else:
            self.l1 = nnx.Linear(math.prod(shape), 4 * width, rngs=rngs)
            self.l2 = nnx.Linear(4 * width, 4 * width, rngs=rngs)
            d = 4 * width
        self.out = nnx.Linear(d, 1, rngs=rngs)

    def __call__(self, h, y=None, key=None):
        if self.label is not None:
            h = self.label.join(h, y)
        elif not self.spatial:
            h = h.reshape(h.shape[0], -1)
        h = nnx.leaky_relu(self.l1(h), 0.2)
        h = nnx.leaky_relu(self.l2(h), 0.2)
        h = dropout(h.reshape(h.shape[0], -1), self.rate, key)
        return self.out(h)[:, 0]


class LabelledDecoder(nnx.Module):
    """(z (n, *z_shape), y (n,)) -> x_hat (n, *x_shape) in [0, 1]: `attacks.build_decoder`'s
    decoder on z with the label joined (an embedding, or one extra channel)."""

    def __init__(self, z_shape, x_shape, classes: int, *, seed: int = 0, rngs: nnx.Rngs):
        self.label = _Label(z_shape, classes, rngs=rngs)
        self.decoder = build_decoder(self.label.joined_shape(), x_shape, seed=seed)

    def __call__(self, z, y):
        return self.decoder(self.label.join(z, y))


def decoder_for(z_shape, x_shape, classes: int | None, seed: int) -> nnx.Module:
    """A decoder of z (classes None) or of (z, y) (classes given)."""
    if classes:
        return LabelledDecoder(z_shape, x_shape, classes, seed=seed, rngs=rngs_for(seed + 7))
    return build_decoder(tuple(z_shape), tuple(x_shape), seed=seed)
