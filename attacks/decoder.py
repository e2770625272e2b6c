"""Black-box inversion: a decoder z -> x_hat trained on leaked pairs (x, z).

Threat model (NoPeek, arXiv 2008.09161): the attacker holds some inputs with the
activations they produced at the cut (a leaked share of the training set, or an
auxiliary set from another distribution) and learns the inverse map. The decoder's
shape follows the shapes of z and x: an MLP for flat activations, convolutions with
x2 upsampling (resize-convolution, or transposed convolution) for spatial ones. Outputs pass through a sigmoid, so
reconstructions lie in [0, 1] like the inputs.

A stack of decoders (one per target model of a sweep) trains in one compiled step. How
the stack is mapped is the caller's choice (`map_models`, default `jax.vmap`): a
training toolkit can pass its own (nopeek passes an unrolled map for convnets on the
CPU), and this module stays free of any training code.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx



class MLPDecoder(nnx.Module):
    """Flat z (n, d_z) -> x (n, *x_shape): dense 256 -> dense 256 -> dense prod(x_shape), sigmoid."""

    def __init__(self, z_dim: int, x_shape, hidden: int = 256, *, rngs: nnx.Rngs):
        self.x_shape = tuple(x_shape)
        self.l1 = nnx.Linear(z_dim, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, math.prod(self.x_shape), rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.l1(z.reshape(z.shape[0], -1)))
        h = nnx.relu(self.l2(h))
        return nnx.sigmoid(self.out(h)).reshape(z.shape[0], *self.x_shape)


UPSAMPLING = ("resize", "transpose")


class ConvDecoder(nnx.Module):
    """Spatial z (n, h, w, c) -> x (n, H, W, C), H = h * 2^k, sigmoid output.

    conv 3x3, then k x2 upsamplings, then conv 3x3 to C channels. `upsample="resize"`
    (default) doubles by nearest-neighbour repetition then a 3x3 conv (Odena et al.,
    "Deconvolution and checkerboard artifacts", Distill 2016); `"transpose"` uses a
    stride-2 transposed convolution. On XLA:CPU the transposed convolution ran 3x slower
    at the same width (bench/README.md), so resize is the default.
    """

    def __init__(self, z_shape, x_shape, width: int = 16, upsample: str = "resize", *, rngs: nnx.Rngs):
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        h, _, c = z_shape
        self.upsample = upsample
        ups = int(round(math.log2(x_shape[0] // h)))
        self.inp = nnx.Conv(c, width, (3, 3), padding="SAME", rngs=rngs)
        if upsample == "transpose":
            layers = [nnx.ConvTranspose(width, width, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs) for _ in range(ups)]
        else:
            layers = [nnx.Conv(width, width, (3, 3), padding="SAME", rngs=rngs) for _ in range(ups)]
        self.up = nnx.List(layers)
        self.out = nnx.Conv(width, x_shape[-1], (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.inp(z))
        for layer in self.up:
            if self.upsample == "resize":
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = nnx.relu(layer(h))
        return nnx.sigmoid(self.out(h))


def _is_spatial_match(z_shape, x_shape) -> bool:
    """A conv decoder fits when z is (h, w, c), x is (H, W, C) and H/h = W/w is a power of 2."""
    if len(z_shape) != 3 or len(x_shape) != 3:
        return False
    (h, w, _), (hh, ww, _) = z_shape, x_shape
    if hh % h or ww % w or hh // h != ww // w:
        return False
    ratio = hh // h
    return ratio & (ratio - 1) == 0


def build_decoder(z_shape, x_shape, *, seed: int = 0, upsample: str = "resize") -> nnx.Module:
    """The decoder for activations of per-sample shape `z_shape` and inputs of `x_shape`."""
    rngs = nnx.Rngs(seed)
    if _is_spatial_match(tuple(z_shape), tuple(x_shape)):
        return ConvDecoder(tuple(z_shape), tuple(x_shape), upsample=upsample, rngs=rngs)
    return MLPDecoder(math.prod(z_shape), tuple(x_shape), rngs=rngs)


def vmap_models(fn, in_axes):
    """The default way to run a function over a stack of models: `jax.vmap`."""
    return jax.vmap(fn, in_axes=in_axes)


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@dataclasses.dataclass
class DecoderAttack:
    """K fitted decoders. `reconstruct(z_stack)` maps (K, n, *z_shape) -> (K, n, *x_shape)."""

    graphdef: object
    params: object  # leaves with a leading axis K
    map_models: object  # how the stack is mapped (see `fit_decoders`)
    loss_history: np.ndarray  # (steps // log_every, K)

    def reconstruct(self, z_stack, chunk: int = 1024) -> np.ndarray:
        graphdef = self.graphdef
        apply = jax.jit(self.map_models(lambda p, z: nnx.merge(graphdef, p)(z), (0, 0)))
        outs = [np.asarray(apply(self.params, jnp.asarray(z_stack[:, i : i + chunk], jnp.float32)))
                for i in range(0, z_stack.shape[1], chunk)]
        return np.concatenate(outs, axis=1)


def fit_decoders(
    z_stack,
    x,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    upsample: str = "resize",
    map_models=vmap_models,
    log_every: int = 100,
    progress=None,
) -> DecoderAttack:
    """Train one decoder per target model on the attacker's pairs, all in one compiled step.

    Args:
      z_stack: (K, n, *z_shape) activations the attacker observed for its inputs, per target.
      x: (n, *x_shape) the attacker's inputs in [0, 1] (the same for every target).
      steps, batch_size, lr: Adam on the mean squared reconstruction error.
      upsample: the conv decoder's upsampling, "resize" or "transpose" (see ConvDecoder).
      map_models: `map_models(fn, in_axes) -> fn` runs fn over the K decoders (default
        `jax.vmap`; any function with vmap's contract, e.g. an unrolled map).
      progress: optional callable(step, losses) called every `log_every` steps.

    Returns:
      DecoderAttack holding the K trained decoders.
    """
    z_stack = jnp.asarray(z_stack, jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    if z_stack.ndim < 3 or z_stack.shape[1] != x.shape[0]:
        raise ValueError(
            f"z_stack must be (K, n, ...) with n = {x.shape[0]} attacker samples, got shape {z_stack.shape}"
        )
    k, n = z_stack.shape[:2]
    z_shape, x_shape = z_stack.shape[2:], x.shape[1:]
    decoders = [build_decoder(z_shape, x_shape, seed=seed + i, upsample=upsample) for i in range(k)]
    graphdef = nnx.split(decoders[0])[0]
    params = _stack([nnx.split(d)[1] for d in decoders])
    optimizer = optax.adam(lr)
    opt_state = jax.vmap(optimizer.init)(params)
    batch_size = min(batch_size, n)

    def one_step(p, o, z, xb):
        def loss(p):
            return jnp.mean((nnx.merge(graphdef, p)(z) - xb) ** 2)

        value, grads = jax.value_and_grad(loss)(p)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    stacked = map_models(one_step, (0, 0, 0, None))

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, idx):
        return stacked(p, o, z_stack[:, idx], x[idx])

    rng = np.random.default_rng(seed)
    history, running = [], None
    for i in range(steps):
        idx = jnp.asarray(rng.choice(n, batch_size, replace=False))
        params, opt_state, losses = step(params, opt_state, idx)
        running = losses if running is None else running + losses
        if (i + 1) % log_every == 0:
            history.append(np.asarray(running) / log_every)
            running = None
            if progress is not None:
                progress(i + 1, history[-1])
    return DecoderAttack(graphdef, params, map_models, np.asarray(history))
