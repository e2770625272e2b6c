"""The papers' noise baseline: a defence that acts on a message on its way out.

The noise baseline (NoPeek paper, Fig. "trade-off"): the data holder adds noise to the
activations it sends, at training and at test time. During training one key per step
draws the noise of the whole batch; at test time the noise of sample i is drawn from
`fold_in(key, i)`, so it is the same whatever the evaluation chunk size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import jax
import jax.numpy as jnp

from nopeek.core import Section, Stream, raise_first_failure, seed_key, step_key
from nopeek.defences._registry import Context, register
from nopeek.protocol import Defence

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


class NoiseDefence(Defence):
    """The data holder adds noise of scale `scale` to every protected message it sends.

    Training: one key per step (stream TRAIN_NOISE) draws the whole batch's noise, folded
    with the message's index. Evaluation (stream TEST_NOISE): per replica, then per sample."""

    transforms_messages = True

    def __init__(self, scale, kind: str, context: Context):
        self.scale, self.kind = scale, kind
        if context.evaluation:
            self.key = seed_key(context.seed, Stream.TEST_NOISE)
        else:
            self.key = step_key(context.seed, Stream.TRAIN_NOISE, context.step)

    def send(self, message, index, z, replicas):
        return add_noise(z, jax.random.fold_in(self.key, index), self.scale, self.kind)

    def send_eval(self, message, index, z, sample_index, replicas):
        k = jax.random.fold_in(self.key, index)
        if replicas > 1:
            ks = jax.vmap(lambda r: jax.random.fold_in(k, r))(jnp.arange(z.shape[0]))
            return jax.vmap(lambda o, kk: add_noise_per_sample(o, kk, self.scale, self.kind, sample_index))(z, ks)
        return add_noise_per_sample(z, k, self.scale, self.kind, sample_index)


@dataclasses.dataclass(frozen=True)
class NoiseSettings(Section):
    """The noise defence's setting besides its scale."""

    noise_kind: str = field(default="gaussian", metadata={"help": "noise distribution", "choices": NOISE_KINDS})

    def validate(self) -> "NoiseSettings":
        raise_first_failure([(self.noise_kind in NOISE_KINDS, f"unknown noise kind {self.noise_kind!r}; choose from "
                                                               f"{', '.join(NOISE_KINDS)}")])
        return self


register("noise", lambda scale, ctx: NoiseDefence(scale, ctx.setting("noise_kind", "gaussian"), ctx),
         acts_on="message", settings=NoiseSettings, strength="scale of the noise added to what the data holder sends", config_field="noise_scale",
         description="the papers' baseline: Gaussian (or uniform, --noise-kind) noise on the activations, train and test")
