"""Differential privacy: the Gaussian mechanism on what crosses the cut, and DP-SGD on the
client's parameters; each with its epsilon (`nopeek.defences._accounting`).

- `dp_message` (strength sigma, the noise multiplier): the data holder clips each sample's
  message to L2 norm C over all its values, m = z * min(1, C / |z|), and sends
  m + N(0, (sigma C)^2 I), at training (one key per step) and at evaluation (sample i's
  noise from its position, as the noise baseline). Its epsilon covers the messages of each
  training record given the client's weights (one Gaussian per epoch, no amplification: the
  server knows whose message it is); not what the weights carry about the data.
- `dp_sgd` (strength sigma): every party that holds raw inputs replaces the gradient of its
  parameters by (sum_i clip_C(g_i) + N(0, (sigma C)^2 I)) / B, with g_i the gradient of
  sample i's own loss (per-sample gradients by `jax.vmap` in the engine; the batch loss is
  a mean, so g_i is B times sample i's contribution) and the clipping over all of the
  party's parameters together. Its epsilon covers the client's parameters; the messages are
  sent as they are, so the server still sees f(x) of every sample. The per-sample view
  needs every loss term to be a sum over samples: a penalty on the batch (NoPeek's dCor
  couples the samples) or a defence with parameters of its own is refused beside it.

C is `dp_clip` (default 1), delta `dp_delta` (default 1e-5, below 1/N for N = 5,000). At
strength 0 both leave everything as it was, bit for bit (`jnp.where`).

References: Dwork & Roth, "The algorithmic foundations of differential privacy", 2014 (the
Gaussian mechanism); Abadi et al., "Deep learning with differential privacy", CCS 2016.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import field

import jax
import jax.numpy as jnp

from nopeek.core import Section, Stream, finite, raise_first_failure, seed_key, step_key
from nopeek.defences._accounting import dpsgd_events, message_events
from nopeek.defences._registry import DEFENCES, Context, register
from nopeek.errors import ConfigError
from nopeek.protocol import Defence


def clip_rows(z: jax.Array, clip, batch_dims: int = 1) -> jax.Array:
    """Each sample of z (n, ...) (or (N, n, ...) with `batch_dims` 2) scaled to L2 norm at most `clip`."""
    flat = z.reshape(*z.shape[:batch_dims], -1)
    norm = jnp.sqrt(jnp.sum(flat * flat, axis=-1))
    factor = jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12))
    return z * factor.reshape(factor.shape + (1,) * (z.ndim - batch_dims)).astype(z.dtype)


class GaussianMessage(Defence):
    """The Gaussian mechanism on every protected message (see the module docstring)."""

    transforms_messages = True

    def __init__(self, sigma, clip: float, context: Context):
        self.sigma, self.clip = sigma, clip
        if context.evaluation:
            self.key = seed_key(context.seed, Stream.TEST_NOISE)
        else:
            self.key = step_key(context.seed, Stream.TRAIN_NOISE, context.step)

    def _private(self, z, noise, replicas):
        out = clip_rows(z, self.clip, 2 if replicas > 1 else 1) + (self.sigma * self.clip) * noise
        return jnp.where(self.sigma > 0, out, z)

    def send(self, message, index, z, replicas):
        noise = jax.random.normal(jax.random.fold_in(self.key, index), z.shape, z.dtype)
        return self._private(z, noise, replicas)

    def send_eval(self, message, index, z, sample_index, replicas):
        k = jax.random.fold_in(self.key, index)

        def per_sample(key, shape):
            return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, z.dtype))(sample_index)

        if replicas > 1:
            noise = jnp.stack([per_sample(jax.random.fold_in(k, r), z.shape[2:]) for r in range(z.shape[0])])
        else:
            noise = per_sample(k, z.shape[1:])
        return self._private(z, noise, replicas)

    def send_mean(self, message, index, z, replicas):
        return jnp.where(self.sigma > 0, clip_rows(z, self.clip, 2 if replicas > 1 else 1), z)


class DPSGD(Defence):
    """DP-SGD on the parameters of every party that holds raw inputs (see the module docstring).
    Noise: stream PARAMETER_NOISE at the training step, folded with the party's name."""

    privatises_parameters = True

    def __init__(self, sigma, clip: float, context: Context):
        self.sigma, self.clip = sigma, clip
        self.key = step_key(context.seed, Stream.PARAMETER_NOISE, context.step)

    def private(self, party: str, per_sample) -> object:
        """(sum_i clip_C(n * row_i) + N(0, (sigma C)^2 I)) / n of per-sample rows (leading axis n)."""
        leaves, tree = jax.tree.flatten(per_sample)
        n = leaves[0].shape[0]
        rows = [a * n for a in leaves]  # sample i's own loss gradient: the batch loss is a mean
        norm = jnp.sqrt(sum(jnp.sum(a.reshape(n, -1) ** 2, axis=1) for a in rows))
        factor = jnp.minimum(1.0, self.clip / jnp.maximum(norm, 1e-12))
        key = jax.random.fold_in(self.key, zlib.crc32(party.encode()) % (2**31))
        out = []
        for j, a in enumerate(rows):
            total = jnp.tensordot(factor.astype(a.dtype), a, axes=1)
            noise = jax.random.normal(jax.random.fold_in(key, j), total.shape, a.dtype)
            out.append((total + (self.sigma * self.clip) * noise) / n)
        return jax.tree.unflatten(tree, out)

    def parameter_gradients(self, party, batch, per_sample):
        # A conditional rather than a select: at strength 0 the per-sample gradients are not
        # computed at all, and the batch gradient is the one a program without DP-SGD applies.
        return jax.lax.cond(self.sigma > 0, lambda b: self.private(party, per_sample()), lambda b: b, batch)


def _clip(ctx: Context) -> float:
    clip = float(ctx.setting("dp_clip", 1.0))
    if not clip > 0:
        raise ConfigError(f"--dp-clip must be > 0, got {clip}")
    return clip


def _check_holders(strength, num_classes, topology_spec):
    if topology_spec is not None and not topology_spec.one_sample_holder:
        raise ConfigError(f"--defenses dp_sgd: {topology_spec.name} shares each sample or the samples among several "
                          "data holders; DP-SGD's per-sample clipping and its accounting need one holder of whole samples")


def _alone(others):
    refused = [name for name in others if DEFENCES[name].acts_on == "loss" or DEFENCES[name].owns_parameters]
    if refused:
        raise ConfigError(f"--defenses dp_sgd: cannot be combined with {', '.join(refused)} (a penalty on the batch or "
                          "parameters of a defence's own break the per-sample sensitivity DP-SGD's epsilon rests on)")


@dataclasses.dataclass(frozen=True)
class DPSettings(Section):
    """dp_message's and dp_sgd's settings besides their noise multiplier."""

    dp_clip: float = field(default=1.0, metadata={"help": "dp_message and dp_sgd: the clipping norm C of each sample's message or parameter gradient"})
    dp_delta: float = field(default=1e-5, metadata={"help": "dp_message and dp_sgd: the delta their epsilon is reported at"})

    def validate(self) -> "DPSettings":
        raise_first_failure([
            (finite(self.dp_clip) and self.dp_clip > 0, f"--dp-clip must be finite and > 0, got {self.dp_clip}"),
            (finite(self.dp_delta) and 0 < self.dp_delta < 1, f"--dp-delta must be in (0, 1), got {self.dp_delta}"),
        ])
        return self


register("dp_message", lambda s, ctx: GaussianMessage(s, _clip(ctx), ctx), acts_on="message", settings=DPSettings,
         strength="noise multiplier sigma: noise std sigma * C after clipping each message to C (--dp-clip)",
         accounting=lambda s, settings, releases: message_events(s, releases),
         description="the Gaussian mechanism on the messages: per-sample clipping and noise, with its (epsilon, delta)")
register("dp_sgd", lambda s, ctx: DPSGD(s, _clip(ctx), ctx), acts_on="parameters", settings=DPSettings,
         strength="noise multiplier sigma of DP-SGD on the data holder's parameters (clip C: --dp-clip)",
         check=_check_holders, combines=_alone, accounting=lambda s, settings, releases: dpsgd_events(s, releases),
         description="DP-SGD on the client's parameters: per-example clipping (vmap) and noise, with its (epsilon, delta)")
