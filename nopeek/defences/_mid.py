"""MID: a variational information bottleneck at the cut, run by the data holder (strength:
the weight lambda of its KL term).

The sender of each protected message owns an encoder and a decoder (parameters of its own,
trained with its optimiser on its loss; `Defence.has_parameters`). For one sample's message
h (d values, flattened):

    [mu, rho] = W_e h + b_e                      (2k values; k = min(d, mid_dim))
    sigma = softplus(rho - 5),  u = mu + sigma * eps,  eps ~ N(0, I_k)
    m = W_2 relu(W_1 u + b_1) + b_2              (hidden 5k; m has h's shape)

and it sends m, adding lambda * mean_i KL(N(mu_i, sigma_i^2) || N(0, I)) to its loss, with
KL_i = 1/2 sum_j (mu_ij^2 + sigma_ij^2 - 1 - 2 log sigma_ij) in nats. The KL bounds the
mutual information between x and u, hence between x and m (data processing): an
information bound, not a differential-privacy guarantee. Evaluation samples u too (per
sample from its position), as the reference does; `send_mean` decodes mu (the white-box
attacker's function). At lambda = 0 the message is h itself, bit for bit, and the
bottleneck's parameters get zero gradients.

This is VFLAIR's passive-party MID layer (`MID_model`: the data party wraps its own output,
the placement that defends against feature reconstruction), with two changes: no ReLU on the
encoder output (VFLAIR's makes mu >= 0; a standard VIB has none) and a linear decoder output
(the cut's messages may be negative). The shift 5 is VFLAIR's for MNIST (initial sigma 0.0067).

References: Zou, Liu, Zhang, "Mutual information regularization for vertical federated
learning", arXiv 2301.01142 (2023); VFLAIR (github.com/FLAIR-THU/VFLAIR),
`src/models/mid_model_rapper.py`; Alemi et al., "Deep variational information bottleneck",
ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

import jax
import jax.numpy as jnp

from nopeek.core import Section, Stream, raise_first_failure, seed_key, step_key
from nopeek.defences._registry import Context, register
from nopeek.errors import ConfigError
from nopeek.protocol import Defence, Penalty

SHIFT = 5.0  # VFLAIR's std shift for MNIST: sigma starts at softplus(-5) = 0.0067
HIDDEN = 5  # the decoder's hidden width, in multiples of k (VFLAIR's MID_model)


def init_bottleneck(d: int, k: int, key: jax.Array) -> dict:
    """Parameters of a bottleneck from d values to k and back: {"enc", "dec1", "dec2"}, each
    {"w", "b"}; weights LeCun-normal (as Flax's Dense), biases 0."""
    init = jax.nn.initializers.lecun_normal()
    k1, k2, k3 = jax.random.split(key, 3)

    def dense(key, n_in, n_out):
        return {"w": init(key, (n_in, n_out), jnp.float32), "b": jnp.zeros((n_out,), jnp.float32)}

    return {"enc": dense(k1, d, 2 * k), "dec1": dense(k2, k, HIDDEN * k), "dec2": dense(k3, HIDDEN * k, d)}


def encode(params: dict, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, sigma), each (n, k), of messages h (n, ...)."""
    out = h.reshape(h.shape[0], -1) @ params["enc"]["w"] + params["enc"]["b"][None]
    mu, rho = jnp.split(out, 2, axis=-1)
    return mu, jnp.maximum(jax.nn.softplus(rho - SHIFT), 1e-6)


def decode(params: dict, u: jax.Array, shape) -> jax.Array:
    """Messages (n, *shape) from bottleneck samples u (n, k)."""
    hidden = jax.nn.relu(u @ params["dec1"]["w"] + params["dec1"]["b"][None])
    return (hidden @ params["dec2"]["w"] + params["dec2"]["b"][None]).reshape(u.shape[0], *shape)


def kl_divergence(params: dict, h: jax.Array) -> jax.Array:
    """Mean over the batch of KL(N(mu, sigma^2) || N(0, I)) in nats, for messages h (n, ...)."""
    mu, sigma = encode(params, h)
    return jnp.mean(0.5 * jnp.sum(mu**2 + sigma**2 - 1.0 - 2.0 * jnp.log(sigma), axis=-1))


class MID(Defence):
    """The bottleneck on every protected message (see the module docstring); keys: stream
    TRAIN_NOISE at the step (TEST_NOISE per sample at evaluation), folded with the message's
    index and, for a replicated sender, the replica."""

    transforms_messages = True
    has_parameters = True

    def __init__(self, weight, dim: int, context: Context):
        self.weight, self.dim = weight, dim
        if context.evaluation:
            self.key = seed_key(context.seed, Stream.TEST_NOISE)
        else:
            self.key = step_key(context.seed, Stream.TRAIN_NOISE, context.step)

    def init_parameters(self, message, sample_shape, key):
        d = math.prod(sample_shape)
        return init_bottleneck(d, min(d, self.dim), key)

    def _per_replica(self, fn, z, params, replicas, *args):
        if replicas == 1:
            return fn(z, params, self.key, *args)
        keys = jax.vmap(lambda r: jax.random.fold_in(self.key, r))(jnp.arange(z.shape[0]))
        return jax.vmap(lambda zz, pp, kk: fn(zz, pp, kk, *args))(z, params, keys)

    def send(self, message, index, z, replicas, params=None):
        def one(h, p, key):
            mu, sigma = encode(p, h)
            eps = jax.random.normal(jax.random.fold_in(key, index), mu.shape, mu.dtype)
            return decode(p, mu + sigma * eps, h.shape[1:])

        return jnp.where(self.weight > 0, self._per_replica(one, z, params, replicas), z)

    def send_eval(self, message, index, z, sample_index, replicas, params=None):
        def one(h, p, key):
            mu, sigma = encode(p, h)
            k = jax.random.fold_in(key, index)
            eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), mu.shape[1:], mu.dtype))(sample_index)
            return decode(p, mu + sigma * eps, h.shape[1:])

        return jnp.where(self.weight > 0, self._per_replica(one, z, params, replicas), z)

    def send_mean(self, message, index, z, replicas, params=None):
        def one(h, p, key):
            return decode(p, encode(p, h)[0], h.shape[1:])

        return jnp.where(self.weight > 0, self._per_replica(one, z, params, replicas), z)

    def penalties(self, message):
        return (Penalty("mid_kl", self.weight, lambda x, m, p: kl_divergence(p, m), parameters=True),)


def _make(weight, ctx: Context) -> MID:
    dim = int(ctx.setting("mid_dim", 64))
    if dim < 1:
        raise ConfigError(f"--mid-dim must be >= 1, got {dim}")
    return MID(weight, dim, ctx)


@dataclasses.dataclass(frozen=True)
class MIDSettings(Section):
    """MID's setting besides its weight."""

    mid_dim: int = field(default=64, metadata={"help": "mid: the bottleneck's size k (at most the message's size)"})

    def validate(self) -> "MIDSettings":
        raise_first_failure([(self.mid_dim >= 1, f"--mid-dim must be >= 1, got {self.mid_dim}")])
        return self


register("mid", _make, acts_on="message", owns_parameters=True, settings=MIDSettings,
         strength="lambda, the weight on the bottleneck's KL (nats per sample); bottleneck size --mid-dim",
         description="MID: a variational information bottleneck at the cut, run by the data holder (Zou et al. 2023)")
