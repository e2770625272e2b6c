"""SDAR: a passive server inverts a client it simulates, with adversarial regularisation.

Threat model (Zhu et al., "Passive inference attacks on split learning via adversarial
regularization", NDSS 2025, arXiv 2310.10483): an honest-but-curious server holds its own
trained part g of the network, the messages z the client sent during training (with their
labels in vanilla split learning, where the labels are sent), and an auxiliary labelled set
(x_aux, y_aux) of the same distribution that the client never trained on; no leaked
(x, z) pairs. It trains, per step, on one auxiliary batch and one batch of observed z:

  simulator f~ (x -> z):   CE(g(f~(x_aux)), y_aux) + lambda1 * BCE(D_f(f~(x_aux)), 1)
                           [+ alpha * dCor(x_aux, f~(x_aux)) when it mimics a known NoPeek alpha]
  D_f (z -> real?):        BCE(D_f(z), 1) + BCE(D_f(f~(x_aux)), 0)
  decoder d (z -> x):      MSE(d(f~(x_aux)), x_aux) + lambda2 * BCE(D_d(d(z)), 1)
  D_d (x -> real?):        BCE(D_d(x_aux), 1) + BCE(D_d(d(z)), 0), learning rate decoder_lr * lambda2

In U-shaped split learning g ends in features, not logits, and the labels stay with the
client: the attacker trains its own head h~ with the simulator (CE(h~(g(f~(x))), y), the
auxiliary labels flipped to a random class with probability `flip`) and reads the client's
labels as argmax h~(g(z)). In vanilla split learning D_f, d and D_d also read the label
(`conditional`). Reconstructions: d(z) of the target messages.

Deviations from the paper's code (3f0a0a8 of github.com/zhxchd/SDAR_SplitNN), by design:
the attack runs after training against the final g and the final client's messages for
the training set (offline; the paper attacks while training, one step per training step),
2,000 steps at batch 32 (the code: 20,000 at 128); the networks are scaled to the data
(`attacks.nets`); the simulator is the client's architecture when the attacker is given
it (the paper's default), else a substitute. Measured, not chosen: at the code's lambda1
= 0.02 with D_f's learning rate lr * lambda1 = 2e-5, D_f told the simulator's messages
from the client's every time on digits and the U-shaped heads read a permutation of the
classes; the defaults here are lambda1 = 1 and a learning rate of 1e-4 for D_f
(`df_lr`). Losses are batch means (the code's are sums; Adam is invariant to that up to
its eps).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import metrics
from attacks import progress
from attacks.decoder import init_stacked, rngs_for, vmap_models
from attacks.nets import Discriminator, Head, SubstituteClient, decoder_for, nonnegative_messages, with_relu_outputs

EPS = 1e-7  # Keras' Adam epsilon, which the SDAR code (and SecretFlow's port) uses


def cross_entropy(logits, y):
    """Mean softmax cross-entropy of logits (n, C) against integer labels (n,)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def bce(logits, target: float):
    """Mean binary cross-entropy of logits (n,) against a constant target (1 real, 0 fake)."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def flip_labels(key, y, rate, classes: int):
    """Each label replaced by a uniformly drawn class with probability `rate` (SDAR's flipping)."""
    k1, k2 = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(k1, rate, y.shape), jax.random.randint(k2, y.shape, 0, classes), y)


@dataclasses.dataclass(frozen=True)
class Victim:
    """What the server holds of the split model: its own part and where the labels are.

    server_apply(params, z) -> its output (logits when `labels_at_server`, else the
      features it sends back to the label holder); server_params: K pytrees.
    classes: the number of classes.
    """

    server_apply: Callable
    server_params: list
    labels_at_server: bool
    classes: int


def stack(trees):
    """K identical pytrees -> one with a leading axis K."""
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(a) for a in leaves]), *trees)


def _module(make, k: int, seed: int):
    """(graphdef, params stacked over K) of K modules `make(seed + i)`, made in one program
    (`attacks.decoder.init_stacked`)."""
    return init_stacked(make, k, seed)


def _apply(graphdef):
    return lambda p, *a, **kw: nnx.merge(graphdef, p)(*a, **kw)


def simulators(x_shape, z_shape, k: int, seed: int, architecture=None, nonnegative=()):
    """(apply(params, x) -> z, params stacked over K): the client's architecture freshly
    initialised (`architecture(seed) -> (apply, params)`), or a `SubstituteClient` per model
    (`nonnegative`: (K,) bools, model k's with a ReLU output where true; () none)."""
    if architecture is not None:  # seeds far from the victims' own, which the attacker does not know
        built = [architecture(seed + 1000 + i) for i in range(k)]
        return built[0][0], stack([b[1] for b in built])
    graphdef, params = _module(lambda s: SubstituteClient(x_shape, z_shape, rngs=rngs_for(s)), k, seed)
    return _apply(graphdef), with_relu_outputs(params, np.asarray(nonnegative, bool) if len(nonnegative) else np.zeros(k, bool))


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run's settings (see `train`)."""

    steps: int
    batch_size: int
    lr: float
    decoder_lr: float
    head_lr: float
    lambda1: float
    lambda2: float
    flip: float
    conditional: bool
    known_alpha: bool
    nonnegative: tuple = ()  # (K,) bools: model k's substitute simulator ReLUs its output (its messages are >= 0)
    df_lr: float | None = None  # D_f's learning rate (None: lr * lambda1, the SDAR code's)
    dd_lr: float | None = None  # D_d's learning rate (None: decoder_lr * lambda2)


class Simulation:
    """The attacker's networks for K victims and one jitted step that trains them all: the
    simulators (and U-shaped heads), D_f, the decoders and D_d (see the module docstring).

    `step(server_params, z, y)` takes one attack step on one auxiliary batch (drawn here)
    and one batch of observed messages z: (K, b, ...) with their labels y: (b,) (None
    when not conditional; z None: no adversarial terms), against the servers' current
    parameters (stacked over K): called once per split-learning step it is the paper's
    online attack; `train` calls it on batches of the messages observed by the end.
    """

    def __init__(self, x_aux, y_aux, z_shape, victim: Victim, settings: Settings, *, adversarial: bool = True,
                 architecture=None, alphas=None, seed: int = 0, map_models=vmap_models, place=None):
        s = self.settings = settings
        self.victim, self.place, self.seed = victim, place, seed
        self.x_aux = jnp.asarray(x_aux, jnp.float32)
        self.y_aux = jnp.asarray(y_aux, jnp.int32)
        k = len(victim.server_params)
        x_shape, z_shape = tuple(self.x_aux.shape[1:]), tuple(z_shape)
        sim_apply, sim_params = simulators(x_shape, z_shape, k, seed, architecture, s.nonnegative)
        out_shape = jax.eval_shape(victim.server_apply, victim.server_params[0],
                                   jax.ShapeDtypeStruct((2, *z_shape), jnp.float32)).shape[1:]
        cond = self.cond = victim.classes if s.conditional else None
        trainable, applies, lrs = {"sim": sim_params}, {"sim": sim_apply}, {"sim": s.lr}
        if not victim.labels_at_server:
            g, p = _module(lambda i: Head(out_shape, victim.classes, rngs=rngs_for(i + 11)), k, seed)
            trainable["head"], applies["head"], lrs["head"] = p, _apply(g), s.head_lr
        if adversarial and s.lambda1 > 0:
            g, p = _module(lambda i: Discriminator(z_shape, classes=cond, rngs=rngs_for(i + 23)), k, seed)
            trainable["df"], applies["df"], lrs["df"] = p, _apply(g), s.df_lr or s.lr * s.lambda1
        g, p = _module(lambda i: decoder_for(z_shape, x_shape, cond, i + 31), k, seed)
        trainable["dec"], applies["dec"], lrs["dec"] = p, _apply(g), s.decoder_lr
        if adversarial and s.lambda2 > 0:
            g, p = _module(lambda i: Discriminator(x_shape, classes=cond, width=32, rngs=rngs_for(i + 47)), k, seed)
            trainable["dd"], applies["dd"], lrs["dd"] = p, _apply(g), s.dd_lr or s.decoder_lr * s.lambda2
        self.applies = applies
        opts = {name: optax.adam(lr, eps=EPS) for name, lr in lrs.items()}
        states = {name: jax.jit(jax.vmap(opts[name].init))(p) for name, p in trainable.items()}
        self.alpha = jnp.asarray(np.zeros(k) if alphas is None else np.asarray(alphas, np.float32), jnp.float32)
        if place is not None:
            trainable, states = place(trainable), place(states)
        self.trainable, self.states = trainable, states
        self.rng = np.random.default_rng(seed)
        self.key = jax.random.key(seed)
        self.count = 0
        self.history, self._running = [], None
        one = _step_fn(applies, opts, victim, s, cond)
        stacked = map_models(one, (0, 0, 0, 0, None, None, 0 if adversarial else None, None, None))
        self._step = jax.jit(stacked, donate_argnums=(0, 1))

    def step(self, server_params, z=None, y=None, *, log_every: int = 100) -> None:
        """One attack step against the servers' parameters (a pytree stacked over K) on one
        auxiliary batch and the observed batch z: (K, b, ...) (labels y: (b,) if conditional)."""
        idx = jnp.asarray(self.rng.choice(len(self.x_aux), min(self.settings.batch_size, len(self.x_aux)), replace=False))
        if z is not None:
            z = jnp.asarray(z, jnp.float32)
            z = self.place(z) if self.place is not None else z
        y = None if y is None or not self.cond else jnp.asarray(y, jnp.int32)
        self.trainable, self.states, stats = self._step(self.trainable, self.states, server_params, self.alpha,
                                                        self.x_aux[idx], self.y_aux[idx], z, y,
                                                        jax.random.fold_in(self.key, self.count))
        self.count += 1
        self._running = stats if self._running is None else self._running + stats
        if self.count % log_every == 0:
            self.history.append(np.asarray(self._running) / log_every)
            self._running = None

    def nets(self) -> dict:
        """{"sim", "head", "decoder", "df"}: (apply, params stacked over K) each, or None."""
        get = lambda name, key: (self.applies[key], self.trainable[key]) if key in self.trainable else None  # noqa: E731
        return {"sim": get("sim", "sim"), "head": get("head", "head"), "decoder": get("dec", "dec"),
                "df": get("df", "df")}

    def final_stats(self) -> np.ndarray:
        """(K, 2): the simulator's CE and the decoder's MSE over the last logged steps."""
        if self._running is not None:
            return np.asarray(self._running) / (self.count % 100 or 100)
        return self.history[-1] if self.history else np.full((len(self.alpha), 2), np.nan)


def _step_fn(applies, opts, victim: Victim, s: Settings, cond):
    """One model's attack step: (nets, opt states, server params, alpha, aux batch, its labels,
    observed messages, their labels, key) -> (nets, opt states, [simulator CE, decoder MSE])."""

    def logits_of(nets, out):
        return out if victim.labels_at_server else applies["head"](nets["head"], out)

    def decode(p, z, y):
        return applies["dec"](p, z, y) if cond else applies["dec"](p, z)

    def update(name, nets, opt, grads):
        updates, new_opt = opts[name].update(grads, opt[name], nets[name])
        return optax.apply_updates(nets[name], updates), new_opt

    def discriminator_step(name, nets, opt, real, fake):
        """One update of discriminator `name` on (input, condition, key) `real` (target 1)
        and `fake` (target 0)."""

        def loss(p):
            return (bce(applies[name](p, real[0], real[1], key=real[2]), 1.0)
                    + bce(applies[name](p, fake[0], fake[1], key=fake[2]), 0.0))

        return update(name, nets, opt, jax.grad(loss)(nets[name]))

    def one(nets, opt, sp, a, xs, ys, zo, yo, key):
        keys = jax.random.split(key, 6)
        ys_flip = flip_labels(keys[0], ys, s.flip, victim.classes) if s.flip > 0 else ys
        cs, co = (ys, yo) if cond else (None, None)
        new, new_opt = dict(nets), dict(opt)

        def sim_loss(tr):
            zs = applies["sim"](tr["sim"], xs)
            ce = cross_entropy(logits_of({**nets, **tr}, victim.server_apply(sp, zs)), ys_flip)
            loss = ce
            if "df" in nets:
                loss = loss + s.lambda1 * bce(applies["df"](nets["df"], zs, cs, key=keys[1]), 1.0)
            if s.known_alpha:
                loss = loss + a * metrics.distance_correlation(xs, zs)
            return loss, (zs, ce)

        tr = {n: nets[n] for n in ("sim", "head") if n in nets}
        (_, (zs, ce)), grads = jax.value_and_grad(sim_loss, has_aux=True)(tr)
        for name in tr:
            new[name], new_opt[name] = update(name, nets, opt, grads[name])
        if "df" in nets:  # the message discriminator: observed messages real, simulated ones fake
            new["df"], new_opt["df"] = discriminator_step("df", nets, opt, (zo, co, keys[2]),
                                                          (jax.lax.stop_gradient(zs), cs, keys[3]))
        zs2 = jax.lax.stop_gradient(applies["sim"](new["sim"], xs))

        def dec_loss(p):
            mse = jnp.mean((decode(p, zs2, cs) - xs) ** 2)
            loss, xr = mse, None
            if "dd" in nets:
                xr = decode(p, zo, co)
                loss = loss + s.lambda2 * bce(applies["dd"](nets["dd"], xr, co, key=keys[4]), 1.0)
            return loss, (mse, xr)

        (_, (mse, xr)), g = jax.value_and_grad(dec_loss, has_aux=True)(nets["dec"])
        new["dec"], new_opt["dec"] = update("dec", nets, opt, g)
        if "dd" in nets:  # the image discriminator: auxiliary images real, reconstructions fake
            new["dd"], new_opt["dd"] = discriminator_step("dd", nets, opt, (xs, cs, keys[5]),
                                                          (jax.lax.stop_gradient(xr), co, keys[5]))
        return new, new_opt, jnp.stack([ce, mse])

    return one


def train(x_aux, y_aux, z_shape, z_observed, y_observed, victim: Victim, settings: Settings, *, architecture=None,
          alphas=None, seed: int = 0, map_models=vmap_models, place=None) -> Simulation:
    """The offline attack: `settings.steps` steps of a `Simulation` against the servers'
    final parameters, each on a batch of the messages observed (`z_observed`: (K, n_o, ...),
    None: no adversarial terms; `y_observed`: (n_o,) their labels)."""
    sim = Simulation(x_aux, y_aux, z_shape, victim, settings, adversarial=z_observed is not None,
                     architecture=architecture, alphas=alphas, seed=seed, map_models=map_models, place=place)
    server_params = stack(victim.server_params)
    z_obs = None if z_observed is None else jnp.asarray(z_observed, jnp.float32)
    if place is not None:
        server_params = place(server_params)
    rng = np.random.default_rng([seed, 3])
    for _ in progress.steps(settings.steps, "SDAR"):
        if z_obs is None:
            sim.step(server_params)
            continue
        idx = rng.choice(z_obs.shape[1], min(settings.batch_size, z_obs.shape[1]), replace=False)
        sim.step(server_params, z_obs[:, idx], None if y_observed is None else np.asarray(y_observed)[idx])
    return sim


def _chunked(fn, arrays, chunk: int = 512):
    """fn over chunks of the second axis of (K, n, ...) arrays, concatenated."""
    n = np.shape(arrays[0])[1]
    return np.concatenate([np.asarray(fn(*[a[:, i : i + chunk] for a in arrays])) for i in range(0, n, chunk)], axis=1)


def reconstruct(decoder, z_target, y_target=None, *, map_models=vmap_models) -> np.ndarray:
    """d(z) (or d(z, y)) of (K, n, ...) target messages -> (K, n, *x_shape)."""
    apply, params = decoder
    if y_target is None:
        fn = jax.jit(map_models(lambda p, z: apply(p, z), (0, 0)))
        return _chunked(lambda z: fn(params, z), [jnp.asarray(z_target, jnp.float32)])
    fn = jax.jit(map_models(lambda p, z, y: apply(p, z, y), (0, 0, None)))
    y = jnp.asarray(y_target, jnp.int32)
    z = jnp.asarray(z_target, jnp.float32)
    return np.concatenate([np.asarray(fn(params, z[:, i : i + 512], y[i : i + 512])) for i in range(0, z.shape[1], 512)],
                          axis=1)


def infer_labels(victim: Victim, head, z_target, *, map_models=vmap_models) -> np.ndarray:
    """argmax h~(g(z)) for (K, n, ...) target messages -> (K, n) labels."""
    apply, params = head
    server = stack(victim.server_params)
    fn = jax.jit(map_models(lambda hp, sp, z: jnp.argmax(apply(hp, victim.server_apply(sp, z)), axis=-1), (0, 0, 0)))
    return _chunked(lambda z: fn(params, server, z), [jnp.asarray(z_target, jnp.float32)])


def sdar(x_aux, y_aux, z_observed, y_observed, z_target, y_target, victim: Victim, *, architecture=None, alphas=None,
         steps: int = 2000, batch_size: int = 32, lr: float = 1e-3, decoder_lr: float = 5e-4, head_lr: float = 1e-3,
         lambda1: float = 1.0, df_lr: float | None = 1e-4, lambda2: float = 1e-5, dd_lr: float | None = None,
         flip: float | None = None, conditional: bool | None = None, known_alpha: bool = False, seed: int = 0,
         map_models=vmap_models, place=None) -> list[dict]:
    """The SDAR attack against K victims; one output per victim.

    Args:
      x_aux, y_aux: (n_a, ...), (n_a,) auxiliary labelled data the clients never trained on.
      z_observed: (K, n_o, ...) the messages each server received in training; y_observed:
        (n_o,) their labels (read only in vanilla split learning, where they are sent).
      z_target: (K, n_t, ...) messages to invert; y_target: (n_t,) their labels, read
        only when conditional (the server receives them with the messages).
      victim: the server's part and where the labels are (`Victim`).
      architecture: seed -> (apply, params), the client's architecture (the paper's
        simulator); None: a `SubstituteClient`.
      alphas, known_alpha: the clients' NoPeek weights, mimicked by the simulators when
        `known_alpha` (the SDAR code's decorrelation experiments).
      flip: label-flipping rate (default: 0.2 when the labels stay with the client, else 0).
      conditional: condition D_f, the decoder and D_d on the label (default: when the labels
        are at the server).
      steps, batch_size, lr, decoder_lr, head_lr, lambda1, lambda2: the paper code's names
        (its defaults but lambda1: 0.02 there), with 2,000 offline steps at batch 32 (the
        code: 20,000 online at 128).
      df_lr, dd_lr: the discriminators' learning rates (None: lr * lambda1 and
        decoder_lr * lambda2, the code's).

    Returns:
      [{"x_hat": (n_t, *x_shape), "label_hat": (n_t,) (U-shaped), "simulator_ce", "decoder_mse"}] * K.
    """
    conditional = victim.labels_at_server if conditional is None else bool(conditional)
    flip = (0.0 if victim.labels_at_server else 0.2) if flip is None else float(flip)
    settings = Settings(steps, batch_size, lr, decoder_lr, head_lr, lambda1, lambda2, flip, conditional,
                        known_alpha and alphas is not None, tuple(map(bool, nonnegative_messages(z_target))), df_lr, dd_lr)
    sim = train(x_aux, y_aux, np.shape(z_target)[2:], z_observed, y_observed, victim, settings,
                architecture=architecture, alphas=alphas, seed=seed, map_models=map_models, place=place)
    return outputs(sim, z_target, y_target, map_models=map_models)


def outputs(sim: Simulation, z_target, y_target=None, *, victim: Victim | None = None,
            map_models=vmap_models) -> list[dict]:
    """One output per victim of a trained `Simulation`: reconstructions of the target
    messages (K, n_t, ...) (read with their labels y_target when conditional) and, in
    U-shaped split learning, the labels its heads read from them through the servers'
    models (`victim`: their final parameters; default: those it was built with)."""
    nets, stats, victim = sim.nets(), sim.final_stats(), victim or sim.victim
    conditional = sim.cond is not None
    x_hat = reconstruct(nets["decoder"], z_target, y_target if conditional else None, map_models=map_models)
    labels = None if nets["head"] is None else infer_labels(victim, nets["head"], z_target, map_models=map_models)
    out = []
    for k in range(len(x_hat)):
        o = {"x_hat": x_hat[k], "simulator_ce": float(stats[k, 0]), "decoder_mse": float(stats[k, 1]),
             "steps_run": sim.count}
        if labels is not None:
            o["label_hat"] = labels[k]
        out.append(o)
    return out
