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
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attacks import progress as progress_bars



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


UPSAMPLING = ("subpixel", "resize", "transpose")


def depth_to_space(h: jax.Array) -> jax.Array:
    """(n, h, w, 4c) -> (n, 2h, 2w, c): each group of 4 channels becomes a 2x2 patch."""
    n, hh, ww, c4 = h.shape
    c = c4 // 4
    return h.reshape(n, hh, ww, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * hh, 2 * ww, c)


class ConvDecoder(nnx.Module):
    """Spatial z (n, h, w, c) -> x (n, H, W, C), H = h * 2^k, sigmoid output.

    conv 3x3 at the activations' resolution (`depth` of them), then k x2 upsamplings, the
    last one producing the C output channels. `upsample="subpixel"` (default; Shi et al.,
    "Real-time single image and video super-resolution using an efficient sub-pixel
    convolutional neural network", CVPR 2016) runs every convolution at the lower
    resolution with 4x the channels and rearranges them into 2x2 patches; `"resize"`
    doubles by nearest-neighbour repetition then a 3x3 conv at the higher resolution
    (Odena et al., Distill 2016); `"transpose"` uses stride-2 transposed convolutions.
    Subpixel does the same multiply-adds per output pixel as resize at a quarter of the
    positions, so it affords a wider, deeper decoder for the same time (bench/attacks.py).
    """

    def __init__(self, z_shape, x_shape, width: int = 32, upsample: str = "subpixel", depth: int = 1, *,
                 rngs: nnx.Rngs):
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        h, _, c = z_shape
        self.upsample = upsample
        ups = int(round(math.log2(x_shape[0] // h)))
        out_c = x_shape[-1]
        self.inp = nnx.Conv(c, width, (3, 3), padding="SAME", rngs=rngs)
        self.hidden = nnx.List([nnx.Conv(width, width, (3, 3), padding="SAME", rngs=rngs) for _ in range(depth - 1)])
        if upsample == "subpixel":
            layers = [nnx.Conv(width, 4 * width, (3, 3), padding="SAME", rngs=rngs) for _ in range(ups - 1)]
            self.out = nnx.Conv(width, 4 * out_c if ups else out_c, (3, 3), padding="SAME", rngs=rngs)
        elif upsample == "transpose":
            layers = [nnx.ConvTranspose(width, width, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs) for _ in range(ups)]
            self.out = nnx.Conv(width, out_c, (3, 3), padding="SAME", rngs=rngs)
        else:
            layers = [nnx.Conv(width, width, (3, 3), padding="SAME", rngs=rngs) for _ in range(ups)]
            self.out = nnx.Conv(width, out_c, (3, 3), padding="SAME", rngs=rngs)
        self.up = nnx.List(layers)
        self.ups = ups

    def __call__(self, z):
        h = nnx.relu(self.inp(z))
        for layer in self.hidden:
            h = nnx.relu(layer(h))
        for layer in self.up:
            if self.upsample == "resize":
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = layer(h)
            h = nnx.relu(depth_to_space(h) if self.upsample == "subpixel" else h)
        out = self.out(h)
        if self.upsample == "subpixel" and self.ups:
            out = depth_to_space(out)
        return nnx.sigmoid(out)


def spatial_stages(z_shape, x_shape) -> int | None:
    """k when z is (h, w, c) and x is (h * 2^k, w * 2^k, C): a convolutional decoder (or any
    upsampling network) fits with k doubling stages; None otherwise (use a dense one)."""
    if len(z_shape) != 3 or len(x_shape) != 3:
        return None
    (h, w, _), (hh, ww, _) = z_shape, x_shape
    if hh % h or ww % w or hh // h != ww // w:
        return None
    ratio = hh // h
    if ratio & (ratio - 1):
        return None
    return int(round(math.log2(ratio)))


def build_decoder(z_shape, x_shape, *, seed: int = 0, upsample: str = "subpixel", width: int = 32,
                  depth: int = 1) -> nnx.Module:
    """The decoder for activations of per-sample shape `z_shape` and inputs of `x_shape`."""
    rngs = rngs_for(seed)
    if spatial_stages(tuple(z_shape), tuple(x_shape)) is not None:
        return ConvDecoder(tuple(z_shape), tuple(x_shape), width=width, upsample=upsample, depth=depth, rngs=rngs)
    return MLPDecoder(math.prod(z_shape), tuple(x_shape), rngs=rngs)


@jax.jit
def _copied(tree):
    """A copy of every array of `tree` in new buffers, as one program."""
    return jax.tree.map(jnp.copy, tree)


def vmap_models(fn, in_axes):
    """The default way to run a function over a stack of models: `jax.vmap`."""
    return jax.vmap(fn, in_axes=in_axes)


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def rngs_for(seed) -> nnx.Rngs:
    """`nnx.Rngs(seed)` for an int or a traced int32 seed (the same keys)."""
    return nnx.Rngs(jax.random.key(seed))


def init_compiler_options() -> dict | None:
    """jax `compiler_options` of the programs that initialise an attacker's networks: LLVM
    level 0 (they run once; an optimised `truncated_normal` costs about 0.6 s to compile per
    parameter shape, at level 0 a tenth of that), or None (XLA's own effort) where the user
    keeps XLA's defaults (NOPEEK_XLA_DEFAULTS=0, as nopeek's own initialisation does)."""
    if os.environ.get("NOPEEK_XLA_DEFAULTS", "").strip().lower() in ("0", "false", "no"):
        return None
    return {"xla_backend_optimization_level": 0}


def init_stacked(make, k: int, seed: int):
    """(graphdef, parameters stacked over K) of the K networks `make(seed + i)`, i < k, made in
    one program of the seeds (`init_compiler_options`), not eagerly: eager construction
    compiles an optimised program per parameter shape and per layer's shape probe. `make`
    takes the seed as a traced int32 scalar (what `nnx.Rngs(int)` makes of an int)."""
    graphdef = nnx.split(nnx.eval_shape(lambda: make(seed)))[0]

    def build(seeds):
        return _stack([nnx.split(make(seeds[i]))[1] for i in range(k)])

    seeds = np.arange(seed, seed + k, dtype=np.int32)
    try:
        return graphdef, jax.jit(build, compiler_options=init_compiler_options())(seeds)
    except ValueError as err:  # inside a caller's trace (jit, eval_shape), where a nested jit
        if "compiler_options" not in str(err):  # cannot carry compiler options: made in the
            raise  # caller's program
        return graphdef, build(seeds)


@dataclasses.dataclass
class DecoderAttack:
    """K fitted decoders. `reconstruct(z_stack)` maps (K, n, *z_shape) -> (K, n, *x_shape).

    loss_history: (logs, K) mean training loss per `log_every` steps; val_history:
    (evals, K) held-out loss per evaluation (the first row: the attacker's mean input);
    steps: steps actually run (early stopping may end before the budget); use_mean: (K,)
    decoders that never beat the mean input on held-out pairs, which then answer with it.
    """

    graphdef: object
    params: object  # leaves with a leading axis K
    map_models: object  # how the stack is mapped (see `fit_decoders`)
    loss_history: np.ndarray
    val_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    steps: int = 0
    mean: object = None  # (x_shape) the attacker's mean input
    use_mean: object = None  # (K,) bool

    def select(self, k: int) -> "DecoderAttack":
        """Decoder k alone, as a stack of one."""
        one = lambda a: None if a is None else np.asarray(a)[k : k + 1]  # noqa: E731
        return DecoderAttack(self.graphdef, jax.tree.map(lambda a: a[k : k + 1], self.params), self.map_models,
                             self.loss_history[:, k : k + 1] if self.loss_history.ndim == 2 else self.loss_history,
                             self.val_history[:, k : k + 1] if self.val_history.ndim == 2 and self.val_history.size
                             else self.val_history, self.steps, self.mean, one(self.use_mean))

    def reconstruct(self, z_stack, chunk: int = 1024) -> np.ndarray:
        graphdef = self.graphdef
        apply = jax.jit(self.map_models(lambda p, z: nnx.merge(graphdef, p)(z), (0, 0)))
        outs = [np.asarray(apply(self.params, _on_device(z_stack[:, i : i + chunk])))
                for i in range(0, z_stack.shape[1], chunk)]
        x_hat = np.concatenate(outs, axis=1)
        if self.use_mean is not None and np.any(self.use_mean):
            x_hat[np.asarray(self.use_mean)] = np.asarray(self.mean)
        return x_hat


def _on_device(a):
    """`a` as a float32 device array: a transfer for host arrays (`jnp.asarray` of a NumPy
    array compiles a small program per shape), a cast only where a device array needs one."""
    if isinstance(a, jax.Array):
        return a if a.dtype == jnp.float32 else a.astype(jnp.float32)
    return jax.device_put(np.asarray(a, np.float32), may_alias=False)  # a copy: the caller may change `a`


def fit_decoders(
    z_stack,
    x,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    upsample: str = "subpixel",
    map_models=vmap_models,
    log_every: int = 100,
    progress=None,
    validation: float = 0.1,
    eval_every: int = 50,
    patience: int = 4,
    width: int = 32,
    depth: int = 1,
    place=None,
    holdout=None,
    pairs=None,
) -> DecoderAttack:
    """Train one decoder per target model on the attacker's pairs, all in one compiled step.

    A share `validation` of the pairs (at least 20 pairs in all) is held out, and each
    decoder's held-out loss starts from that of the free baseline, the attacker's mean
    input: every `eval_every` steps the held-out loss is measured, the best parameters so
    far are kept, and training ends once no decoder has improved for `patience`
    evaluations, or at the budget `steps`. A decoder that never beats the mean input
    answers with it, so the attack never loses to its baseline on the attacker's own data.

    Args:
      z_stack: (K, n, *z_shape) activations the attacker observed for its inputs, per target.
      x: (n, *x_shape) the attacker's inputs in [0, 1] (the same for every target).
      steps: the budget of Adam steps on the mean squared reconstruction error.
      batch_size: pairs per step.
      lr: Adam's learning rate.
      seed: the decoders' initialisation and the pairs' order (decoder i gets seed + i).
      upsample: the conv decoder's upsampling, "subpixel", "resize" or "transpose" (see ConvDecoder).
      map_models: `map_models(fn, in_axes) -> fn` runs fn over the K decoders (default
        `jax.vmap`; any function with vmap's contract, e.g. an unrolled map).
      progress: optional callable(step, losses) called every `log_every` steps.
      log_every: steps between logged losses.
      validation: the share of pairs held out for early stopping (0 turns it off).
      eval_every: steps between held-out evaluations.
      patience: evaluations without improvement before stopping.
      width: the conv decoder's channels.
      depth: its convolutions before upsampling.
      place: optional function applied to the stacked parameters, optimiser states and
        activations before training (e.g. to shard the K decoders over devices).
      holdout: optional indices of the pairs to hold out (instead of a random `validation`
        share), e.g. real pairs among synthetic ones (into `pairs` where it is given).
      pairs: optional increasing indices (into z_stack's axis 1 and x) of the pairs to use;
        the others are never read. The arrays stay whole, so decoders fitted on several
        shares of one pool (a leak-fraction curve) train with one compiled step.

    Returns:
      DecoderAttack holding the K decoders (each at its best held-out loss).
    """
    # On the host first: indexing and means there, then one transfer each (eager indexing of
    # device arrays compiles a small program per shape).
    z_host = z_stack if isinstance(z_stack, jax.Array) else np.asarray(z_stack, np.float32)
    x_host = np.asarray(x, np.float32)
    z_stack, x = _on_device(z_host), jax.device_put(x_host, may_alias=False)
    if z_stack.ndim < 3 or z_stack.shape[1] != x.shape[0]:
        raise ValueError(
            f"z_stack must be (K, n, ...) with n = {x.shape[0]} attacker samples, got shape {z_stack.shape}"
        )
    k, n = z_stack.shape[:2]
    chosen = np.arange(n) if pairs is None else np.asarray(pairs)
    if (chosen.ndim != 1 or not len(chosen) or not np.issubdtype(chosen.dtype, np.integer)
            or np.any(np.diff(chosen) <= 0) or chosen[0] < 0 or chosen[-1] >= n):
        raise ValueError(f"pairs must be increasing indices in [0, {n}), got {pairs!r}")
    n = len(chosen)
    rng = np.random.default_rng(seed)
    n_val = int(round(validation * n)) if validation and n >= 20 else 0
    order = rng.permutation(n)
    if holdout is not None:
        held = np.zeros(n, bool)
        held[np.asarray(holdout)] = True
        n_val, order = int(held.sum()), np.concatenate([np.flatnonzero(held), np.flatnonzero(~held)])
    val_idx, train_idx = chosen[np.sort(order[:n_val])], chosen[np.sort(order[n_val:])]
    z_shape, x_shape = z_stack.shape[2:], x.shape[1:]
    mean = x_host[train_idx].mean(axis=0)
    graphdef, params = init_stacked(
        lambda s: build_decoder(z_shape, x_shape, seed=s, upsample=upsample, width=width, depth=depth), k, seed)
    optimizer = optax.adam(lr)
    opt_state = jax.jit(jax.vmap(optimizer.init))(params)  # one program, not one per parameter shape
    if place is not None:
        params, opt_state, z_stack = place(params), place(opt_state), place(z_stack)
    batch_size = min(batch_size, len(train_idx))

    def mse(p, z, xb):
        return jnp.mean((nnx.merge(graphdef, p)(z) - xb) ** 2)

    def one_step(p, o, z, xb):
        value, grads = jax.value_and_grad(mse)(p, z, xb)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    # The pairs are arguments, not constants the programs close over: a closed-over array is
    # baked into the compiled program, which then compiles slower and matches no other run's
    # program in the persistent cache (same shapes, other data).
    stacked = map_models(one_step, (0, 0, 0, None))
    held_out = jax.jit(map_models(mse, (0, 0, None)))
    z_val = z_stack[:, val_idx] if isinstance(z_host, jax.Array) else jax.device_put(z_host[:, val_idx])
    x_val = jax.device_put(x_host[val_idx])

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, z_all, x_all, idx):
        return stacked(p, o, z_all[:, idx], x_all[idx])

    @jax.jit
    def keep_best(best, p, improved):
        return jax.tree.map(lambda b, q: jnp.where(improved.reshape((-1,) + (1,) * (q.ndim - 1)), q, b), best, p)

    best, best_val, stale, val_history = params, None, np.zeros(k, int), []
    use_mean = np.zeros(k, bool)
    if n_val:
        best = _copied(params)  # its own buffers: `step` donates params
        base = float(np.mean((mean[None] - x_host[val_idx]) ** 2))
        best_val = np.full(k, base)
        use_mean[:] = True
        val_history.append(best_val.copy())
    history, running, done = [], None, 0
    for i in progress_bars.steps(steps, "decoder"):
        idx = jax.device_put(rng.choice(train_idx, batch_size, replace=False))
        params, opt_state, losses = step(params, opt_state, z_stack, x, idx)
        done = i + 1
        running = losses if running is None else running + losses
        if done % log_every == 0:
            history.append(np.asarray(running) / log_every)
            running = None
            if progress is not None:
                progress(done, history[-1])
        if n_val and done % eval_every == 0:
            val = np.asarray(held_out(params, z_val, x_val))
            val_history.append(val)
            improved = val < best_val
            best = keep_best(best, params, jnp.asarray(improved))
            best_val = np.where(improved, val, best_val)
            use_mean &= ~improved
            stale = np.where(improved, 0, stale + 1)
            if np.all(stale >= patience):
                break
    if running is not None and done % log_every:
        history.append(np.asarray(running) / (done % log_every))
    final = best if n_val else params
    return DecoderAttack(graphdef, final, map_models, np.asarray(history), np.asarray(val_history), done, mean, use_mean)
