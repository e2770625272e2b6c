"""Defences of the labels against the cut-gradient attacks (`attacks.label_leakage`).

In two-party split learning the label holder returns dL/dz for each sample of a batch,
and the other party reads the labels off the rows' norms and directions (Li et al.). The
label holder can perturb the rows before sending them; here that is the engine's
`gradient` hook: every party that knows the labels perturbs every gradient message it
sends, so where the labels sit with the server it perturbs dL/dz, where they stay with
the client (u_shaped) the client perturbs what it returns to the server. Two registered
defences, `maxnorm` and `marvell`, each with its strength.

- max-norm (Li et al.'s heuristic): with g_max the largest row norm of the batch, row i
  becomes g_i * (1 + s * sigma_i * xi_i), sigma_i = sqrt(max(g_max^2 / |g_i|^2 - 1, 0)),
  xi_i ~ N(0, 1) one scalar per row. At strength s = 1 (the paper's) every row's expected
  squared norm is g_max^2; larger s adds more of the same noise (and flips more rows'
  signs, which also blurs their direction). Needs no labels.
- Marvell: Gaussian noise with covariance Sigma_1 on positive rows and Sigma_0 on negative
  ones, chosen per batch to minimise the symmetric KL divergence between the two
  perturbed classes under the power budget p tr(Sigma_1) + (1 - p) tr(Sigma_0) <= P,
  P = s * |mean positive row - mean negative row|^2 (strength s). Rows are modelled as
  N(mean_1, v I) and N(mean_0, u I) with the batch's per-coordinate variances. The
  solution has one eigenvalue along Delta = mean_1 - mean_0 and one (for one class only)
  on its complement; we solve it in closed form for the along-Delta pair, and over the
  isotropic power by a two-level grid search (the reference alternates the closed form
  with bisection). With u = v = 0 it is the closed form of the reference's
  `solve_zero_uv`. Binary labels only; a batch with one class only is sent unperturbed.

References: Li, Sun, Yang, Zhang, Xu, Wang, Chen, Zhang, "Label leakage and protection in
two-party split learning", ICLR 2022 (code: github.com/OscarcarLi/label-protection).
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from nopeek.core import BoundedCache, Stream, step_key
from nopeek.defences._registry import Context, build_defence, defence_setting_names, register
from nopeek.errors import ConfigError
from nopeek.protocol import Capture, Defence, gradient_name, protocol_gradients

LABEL_DEFENSES = ("maxnorm", "marvell")
_TINY = 1e-30


def _rows(g):
    return g.reshape(g.shape[0], -1)


def max_norm(g: jax.Array, key: jax.Array, strength=1.0) -> jax.Array:
    """Max-norm perturbation of the rows of g (n, ...): see the module docstring."""
    flat = _rows(g)
    sq = jnp.sum(flat**2, axis=1)
    sigma = jnp.sqrt(jnp.maximum(jnp.max(sq) / jnp.maximum(sq, _TINY) - 1.0, 0.0))
    xi = jax.random.normal(key, sq.shape, g.dtype)
    factor = 1.0 + strength * sigma * xi
    return g * factor.reshape((-1,) + (1,) * (g.ndim - 1))


# ---- Marvell ---------------------------------------------------------------------------


@jax.jit
def marvell_objective(lam10, lam11, lam20, lam21, *, p, u, v, g, d):
    """Twice the symmetric KL between the perturbed classes, plus 2d (Li et al.):
    (d-1)((l20+u)/(l21+v) + (l21+v)/(l20+u)) + (l10+u+g)/(l11+v) + (l11+v+g)/(l10+u)."""
    def ratio(a, b):
        return a / jnp.maximum(b, _TINY)

    a, b = lam20 + u, lam21 + v
    iso = jnp.where(jnp.abs(a - b) <= 1e-12 * (a + b + _TINY), 2.0, ratio(a, b) + ratio(b, a))
    return (d - 1) * iso + ratio(lam10 + u + g, lam11 + v) + ratio(lam11 + v + g, lam10 + u)


def _pair(power, *, p, u, v, g):
    """The along-Delta variances (lam10, lam11) with p lam11 + (1 - p) lam10 = power that
    minimise the last two terms: the closed form, or the better boundary point."""
    c = power + p * v + (1 - p) * u
    e = jnp.sqrt((c + (1 - p) * g) / jnp.maximum(c + p * g, _TINY))
    lam10 = jnp.clip((power + p * v - p * e * u) / (p * e + 1 - p), 0.0, power / (1 - p))
    lam11 = jnp.maximum((power - (1 - p) * lam10) / p, 0.0)
    candidates = jnp.array([[lam10, lam11], [0.0, power / p], [power / (1 - p), 0.0]])
    values = jax.vmap(lambda c_: marvell_objective(c_[0], c_[1], 0.0, 0.0, p=p, u=u, v=v, g=g, d=1))(candidates)
    return candidates[jnp.argmin(values)]


def _solve_neg_iso(power, *, p, u, v, g, d, grid: int = 33):
    """Case u <= v: lam21 = 0, the negatives may get isotropic noise lam20 on Delta's
    complement. Grid over its power in [0, min(P, (1-p)(d-1)(v-u))], then a finer grid
    around the best point. Returns (lam10, lam11, lam20, lam21)."""
    top = jnp.minimum(power, (1 - p) * (d - 1) * jnp.maximum(v - u, 0.0))

    def total(iso):
        lam20 = iso / jnp.maximum((1 - p) * (d - 1), _TINY)
        lam10, lam11 = _pair(power - iso, p=p, u=u, v=v, g=g)
        return marvell_objective(lam10, lam11, lam20, 0.0, p=p, u=u, v=v, g=g, d=d), jnp.array([lam10, lam11, lam20, 0.0])

    coarse = jnp.linspace(0.0, 1.0, grid) * top
    values, _ = jax.vmap(total)(coarse)
    best = coarse[jnp.argmin(values)]
    step = top / (grid - 1)
    fine = jnp.clip(best + jnp.linspace(-1.0, 1.0, grid) * step, 0.0, top)
    values, lams = jax.vmap(total)(fine)
    return lams[jnp.argmin(values)]


@functools.partial(jax.jit, static_argnames="d")
def marvell_solve(power, *, p, u, v, g, d):
    """Marvell's noise variances (lam10, lam11, lam20, lam21): along Delta and on its
    complement, for negatives (0) and positives (1), spending `power` (see module docstring).
    One compiled program per dimension d (called on its own, as in an analysis, it would
    otherwise run its two grid searches as a few hundred single operations)."""
    neg = _solve_neg_iso(power, p=p, u=u, v=v, g=g, d=d)
    pos = _solve_neg_iso(power, p=1 - p, u=v, v=u, g=g, d=d)  # the mirrored case: positives get the isotropic part
    pos = jnp.array([pos[1], pos[0], pos[3], pos[2]])
    return jnp.where(u <= v, neg, pos)


def marvell(g: jax.Array, y: jax.Array, key: jax.Array, strength=1.0) -> jax.Array:
    """Marvell noise on the rows of g (n, ...) with binary labels y (n,): see the module docstring."""
    flat = _rows(g).astype(jnp.float32)
    n, d = flat.shape
    pos = (y == 1).astype(flat.dtype)
    n1 = jnp.sum(pos)
    n0 = n - n1
    mean1 = pos @ flat / jnp.maximum(n1, 1.0)
    mean0 = (1 - pos) @ flat / jnp.maximum(n0, 1.0)
    delta = mean1 - mean0
    gsq = jnp.sum(delta**2)
    direction = delta / jnp.sqrt(jnp.maximum(gsq, _TINY))
    v = jnp.sum(pos[:, None] * (flat - mean1[None]) ** 2) / jnp.maximum(n1 * d, 1.0)
    u = jnp.sum((1 - pos)[:, None] * (flat - mean0[None]) ** 2) / jnp.maximum(n0 * d, 1.0)
    p = jnp.clip(n1 / n, 1e-6, 1 - 1e-6)
    lam10, lam11, lam20, lam21 = marvell_solve(strength * gsq, p=p, u=u, v=v, g=gsq, d=d)
    k1, k2 = jax.random.split(key)
    zeta = jax.random.normal(k1, flat.shape, flat.dtype)
    zeta = zeta - (zeta @ direction)[:, None] * direction[None]  # on Delta's complement
    xi = jax.random.normal(k2, (n,), flat.dtype)
    along = jnp.where(pos > 0, lam11, lam10)
    iso = jnp.where(pos > 0, lam21, lam20)
    noise = jnp.sqrt(iso)[:, None] * zeta + (jnp.sqrt(along) * xi)[:, None] * direction[None]
    valid = (n1 > 0) & (n0 > 0) & (gsq > 0)
    return jnp.where(valid, g + noise.reshape(g.shape).astype(g.dtype), g)


# ---- as defences: the engine's gradient hook -----------------------------------------------


class LabelDefence(Defence):
    """A party that knows the labels `labels` perturbs every gradient message it sends with
    `perturb(g, y, key, strength)`; at strength 0 it sends g unchanged. Keys: stream
    LABEL_DEFENCE at the training step (LABEL_DEFENCE_EVAL at the batch index when
    evaluating), folded with the tensor's name and the producer's replica."""

    transforms_gradients = True

    def __init__(self, perturb, strength, context: Context, labels: str = "y"):
        self.perturb, self.strength, self.labels = perturb, strength, labels
        stream = Stream.LABEL_DEFENCE_EVAL if context.evaluation else Stream.LABEL_DEFENCE
        self.key = step_key(context.seed, stream, context.step)

    def gradient(self, tensor, g, known, index):
        if self.labels not in known:
            return g
        k = jax.random.fold_in(jax.random.fold_in(self.key, zlib.crc32(tensor.encode()) % (2**31)), index)
        return jnp.where(self.strength > 0, self.perturb(g, known[self.labels], k, self.strength), g)


def _check_binary(name):
    def check(strength, num_classes, topology_spec):
        _check_applies(name, topology_spec)
        if num_classes != 2:
            raise ConfigError(f"--defenses {name} needs a binary task (e.g. breast_cancer); the data has {num_classes} classes")
    return check


def _check_applies(name, topology_spec):
    if topology_spec is not None and not topology_spec.label_defences:
        raise ConfigError(f"--defenses {name}: {topology_spec.name} sends the labels to every server; a label defence "
                          "does not apply")


register("maxnorm", lambda s, ctx: LabelDefence(lambda g, y, k, st: max_norm(g, k, st), s, ctx),
         acts_on="gradient", strength="noise multiplier s (1 = Li et al.'s max-norm)",
         check=lambda s, classes, topo: _check_applies("maxnorm", topo),
         description="max-norm: each returned gradient row scaled with noise to the batch's largest norm (Li et al. 2022)")
register("marvell", lambda s, ctx: LabelDefence(marvell, s, ctx), acts_on="gradient",
         strength="power scale s of Marvell's noise budget", check=_check_binary("marvell"),
         description="Marvell: optimised Gaussian noise on the returned gradients, binary tasks (Li et al. 2022)")


# ---- what a defended label holder returns for held-out samples -------------------------------

_RECEIVED = BoundedCache(8)  # (the built configuration's key, tensor, defences, settings) -> jitted batch function


class _Settings:
    """The defences' own settings as attributes (what `Context.setting` reads), from
    (name, value) pairs: hashable, so a compiled function is kept per set of values."""

    def __init__(self, pairs: tuple):
        self.__dict__.update(dict(pairs))


def _settings_key(settings) -> tuple:
    """(name, value) of every registered defence's own setting in `settings` (() for None)."""
    if settings is None:
        return ()
    return tuple((n, getattr(settings, n)) for n in defence_setting_names() if hasattr(settings, n))


def _received_fn(built, tensor: str, defense: str | None, carried: tuple = (), settings: tuple = ()):
    def make():
        name = gradient_name(tensor)
        topology, prepare = built.topology, built.prepare

        @jax.jit
        def one(params, xb, yb, strength, carried_strengths, seed, batch):
            capture = Capture([name])
            strengths = dict(zip(carried, carried_strengths))
            if defense is not None:
                strengths[defense] = strength
            context = Context(seed, batch, settings=_Settings(settings) if settings else None, evaluation=True)
            defence = build_defence(strengths, context) if strengths else None
            protocol_gradients(topology, params, prepare(xb, yb), defence=defence, transport=capture)
            if name not in capture.values:
                raise ValueError(f"no gradient of {tensor!r} crosses between parties")
            return capture.values[name] * xb.shape[0]

        return one

    return _RECEIVED.get((built.key, tensor, defense, carried, settings), make)


def received_gradients(built, params, x, y, tensor: str, *, defense: str | None = None, strength: float = 0.0,
                       seed: int = 0, batch_size: int = 64, carried=None, settings=None) -> np.ndarray:
    """The per-sample gradients dCE_i/dm_i the producer of message `tensor` receives for
    samples x (n, ...), batch by batch in order as in training, with the label holder's
    `defense` (a gradient defence's name, or None) at `strength` acting on each batch
    (without a defence the rows do not depend on the batch): (n, ...), row i times its
    batch's size (the batch loss is a mean); (N, n, ...) for a producer with N replicas.
    `carried` ({name: strength}): the sender's defences whose own parameters the model holds
    (MID's bottleneck), so that the label holder computes its gradient on the message it was
    trained on. `settings`: the run's config (the defences' own settings, such as MID's
    `mid_dim`; None: their defaults). Compiled functions are kept for the 8 most recent
    (configuration, tensor, defences, settings)."""
    carried = dict(carried or {})
    one = _received_fn(built, tensor, defense, tuple(carried), _settings_key(settings))
    values = jnp.asarray(list(carried.values()), jnp.float32)
    out = []
    for b, i in enumerate(range(0, len(x), batch_size)):
        out.append(np.asarray(one(params, jnp.asarray(x[i : i + batch_size]), jnp.asarray(y[i : i + batch_size]),
                                  jnp.float32(strength), values, seed, b)))
    topology = built.topology
    replicated = topology.party(topology.producer(tensor)).replicas > 1
    return np.concatenate(out, axis=1 if replicated else 0)
