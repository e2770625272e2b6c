"""A dishonest server: the feature-space hijacking attack (FSHA) as a server policy on the engine.

The client is the honest client of vanilla split learning, with whatever defence it runs
(NoPeek, noise): it sends z = f(x) of its private data and trains f on the gradient it
gets back, through the engine's runner (`nopeek.protocol.protocol_gradients`), the same code
as in honest training. The malicious server holds public data from a similar
distribution, a pilot encoder f~, a decoder f~^-1 and a critic D (`nopeek.dishonest._nets`).
Its segment in the protocol is D, and its loss the critic score `Loss(kind="mean")`, so
the gradient it sends back is w * d mean D(z) / dz instead of the task's: the client
moves its features to where D scores low, the pilot's feature space. The server ignores
the runner's gradients of D and updates its own networks, all from one forward pass per
iteration as in the authors' code:

    L_ae = MSE(x_pub, f~^-1(f~(x_pub)))                      (pilot and decoder, one Adam)
    L_D  = mean D(f~(x_pub)) - mean D(z_priv) + w_gp * GP     (D, WGAN-GP; w_gp = 500)

Then f~^-1(z_priv) reconstructs the client's private inputs. The public set is a share of
the training set (`public_fraction`, optionally only `public_classes`) removed from the
client's data; scores are on the held-out test split, which neither party trained on.
MSE is on nopeek's [0, 1] scale; the paper's images are in [-1, 1], where the same error
reads 4x larger (its 0.0193 without defence and 0.0267 against dCor 10^4 are 0.0048 and
0.0067 here).

The same loop (`run_protocol`) runs an honest server too (vanilla training), which is
what the client-side detector (`nopeek.dishonest.SplitGuard`) is calibrated against.

References: Pasquini, Ateniese, Bernaschi, "Unleashing the tiger: inference attacks on
split learning", CCS 2021.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import attacks
import metrics
from nopeek.core import (
    BoundedCache, NumpyStream, Stream, atomic_write_text, check_writable, fingerprint, numpy_rng, publish_folder,
    staging_folder, step_key, write_json,
)
from nopeek.data import Dataset
from nopeek.defences import DEFENCES, Context, build_defence, defence_setting_names
from nopeek.dishonest._config import FSHAConfig
from nopeek.dishonest._nets import attacker_networks, gradient_penalty
from nopeek.errors import ConfigError
from nopeek.protocol import (
    TOPOLOGIES, Capture, Loss, Party, Segment, Topology, forward, gradient_name, leakage, protocol_gradients, segment_fn,
    spec,
)
from nopeek.training import (
    TrainConfig, batch_order, build_topology, cuts_of, init_params, make_optimizer, one_hot, readings, strengths_of,
)

# The server policies a client can train against: name -> what the server does.
SERVER_POLICIES = {
    "honest": "the server finishes the forward pass, returns the task's gradient and updates its own layers",
    "fsha": "feature-space hijacking (Pasquini et al. 2021): the server returns a critic's gradient that moves the "
            "client's features into its own pilot's space, and inverts them with its decoder",
}
SERVERS = tuple(SERVER_POLICIES)


def split_public(y_train, *, public_fraction: float, public_classes=(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(public, private) training indices, disjoint and sorted: the server's public data is a
    `public_fraction` share of the training samples of `public_classes` (all if empty),
    drawn with the attacker's seed; the client keeps every other sample.

    Raises:
      ConfigError: a class with no training samples, or a public or private set under 2 samples.
    """
    y_train = np.asarray(y_train)
    pool = np.arange(len(y_train))
    if len(public_classes):
        missing = sorted(set(int(c) for c in public_classes) - set(np.unique(y_train).tolist()))
        if missing:
            raise ConfigError(f"--public-classes {','.join(map(str, public_classes))}: no training samples of class "
                              f"{','.join(map(str, missing))}")
        pool = pool[np.isin(y_train, public_classes)]
    count = int(round(public_fraction * len(pool)))
    if count < 2 or len(y_train) - count < 2:
        raise ConfigError(f"--public-fraction {public_fraction:g}: {count} public and {len(y_train) - count} private "
                          "samples; each needs at least 2")
    public = np.sort(numpy_rng(seed, NumpyStream.FSHA_PUBLIC).choice(pool, count, replace=False))
    return public, np.setdiff1d(np.arange(len(y_train)), public)


# ---- the protocol: a client and a server policy -------------------------------------


@dataclasses.dataclass
class ProtocolState:
    """The parties' parameters `{party: {segment: State}}` and optimiser states, and the
    malicious server's own networks (pilot, decoder) and their optimiser state."""

    params: Any
    opt: Any
    own: Any
    own_opt: Any


jax.tree_util.register_dataclass(ProtocolState, data_fields=["params", "opt", "own", "own_opt"], meta_fields=[])


def first_layer_vector(grads) -> jax.Array:
    """The client's first parameterised block's gradient, flattened (SplitGuard's vector)."""
    blocks = grads["blocks"]
    first = min(blocks.keys())
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(blocks[first])])


@dataclasses.dataclass(eq=False)
class Protocol:
    """A client (`config`: model, cut, defence, optimiser) with a server policy ("fsha" or
    "honest"). `step(state, x, y, x_pub, t, update_client) -> (state, out)` is one jitted
    iteration; `out["sg"]` is the first-layer gradient the server's message induces on
    the client (the client's own NoPeek term left out), for SplitGuard."""

    server: str
    config: TrainConfig
    topology: Topology
    init: Any  # seed -> ProtocolState
    step: Any
    z_shape: tuple
    send: Any  # jitted (params, x, sample_index) -> what the client sends at test time
    networks: dict | None = None  # FSHA: the graphdefs of pilot, decoder, critic

    def messages(self, state: ProtocolState, x, *, chunk: int = 500) -> np.ndarray:
        """What the client sends for inputs x (n, ...) at test time (its message defences
        included, sample i's draws from its position): (n, *z_shape)."""
        return np.concatenate([
            np.asarray(self.send(state.params, jnp.asarray(x[i : i + chunk]), jnp.arange(i, min(i + chunk, len(x)))))
            for i in range(0, len(x), chunk)
        ])

    def reconstruct(self, state: ProtocolState, z, *, chunk: int = 500) -> np.ndarray:
        """The FSHA server's decoder on messages z: (n, *x_shape) in [0, 1]."""
        graphdef = self.networks["decoder"]
        return np.concatenate([np.asarray(_decode(graphdef, state.own["decoder"], jnp.asarray(z[i : i + chunk])))
                               for i in range(0, len(z), chunk)])


def _client_defences(config: TrainConfig) -> list[str]:
    """The names of the defences the client uses (strength > 0)."""
    return [n for n, v in strengths_of(config).items() if v > 0]


def _client_defence(config: TrainConfig, step, *, evaluation: bool = False, without=()):
    """The client's own defences (those it uses, strength > 0, but `without`), as in honest training."""
    used = {n: v for n, v in strengths_of(config).items() if v > 0 and n not in without}
    return build_defence(used, Context(config.seed, step, config, evaluation=evaluation))


def _make_send(topo: Topology, config: TrainConfig):
    """Jitted (params, x, sample_index) -> the client's message at test time."""
    client = next(s for s in topo.segments if s.party == "client")
    client_only = Topology(topo.name, topo.parties, (client,), (), topo.protected, topo.graphdefs)

    @jax.jit
    def send(params, x, index):
        data = {"x": x, "y": jnp.zeros(x.shape[0], jnp.int32)}
        values = forward(client_only, params, data, defence=_client_defence(config, 0, evaluation=True),
                         sample_index=index)
        return values[client.output]

    return send


@partial(jax.jit, static_argnums=0)
def _decode(graphdef, params, z):
    return nnx.merge(graphdef, params)(z)


def _client_side(topo, params, opt, data, optimizer, config: TrainConfig, t, update_client, transport, splitguard,
                 separate: bool = False):
    """The honest client's part of step t: the runner's gradients (with the client's own
    defences), its own update (skipped when `update_client` is False), and the first-layer
    gradient induced by what it received. With `separate` (the FSHA authors' dCor client,
    their `FSHA_dc.train_step`), the NoPeek term is not added to the received gradient: both
    gradients are taken at the same parameters, and the client's one optimiser steps twice,
    first on alpha * D(x, z), then on what it received. Under Adam the two share their
    moment estimates, so alpha weighs the penalty against the server's gradient."""
    without = ("nopeek",) if separate else ()
    grads, aux = protocol_gradients(topo, params, data, defence=_client_defence(config, t, without=without),
                                    transport=transport)
    client_opt, client_params = opt["client"], params["client"]
    if separate:
        client_seg = next(s for s in topo.segments if s.party == "client")
        fn = segment_fn(topo, client_seg)

        def penalty(p):
            return config.alpha * leakage(data["x"], fn(p, data["x"]), config.leakage)

        value, g = jax.value_and_grad(penalty)(client_params[client_seg.name])
        updates, client_opt = optimizer.update({client_seg.name: g}, client_opt, client_params)
        client_params = optax.apply_updates(client_params, updates)
        aux = {**aux, "leak": {"z": value / jnp.maximum(config.alpha, 1e-30)}}
    updates, client_opt = optimizer.update(grads["client"], client_opt, client_params)
    new_params = optax.apply_updates(client_params, updates)
    new_opt = {"client": client_opt}

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(update_client, a, b), new, old)

    old_opt = {k: opt[k] for k in new_opt}
    if not splitguard:
        return keep(new_params, params["client"]), keep(new_opt, old_opt), grads, aux, jnp.zeros(())
    received = transport.values[gradient_name("z")]
    client_seg = next(s for s in topo.segments if s.party == "client")
    fn = segment_fn(topo, client_seg)
    _, vjp = jax.vjp(lambda p: fn(p, data["x"]), params["client"][client_seg.name])
    sg = first_layer_vector(vjp(received)[0])
    return keep(new_params, params["client"]), keep(new_opt, old_opt), grads, aux, sg


def fsha_topology(config: TrainConfig, input_shape, num_classes: int, networks: dict) -> Topology:
    """The FSHA protocol's graph: the honest vanilla client (same segment, same initialisation)
    and a server whose segment is the critic D and whose loss is its mean score."""
    honest = build_topology(config, input_shape, num_classes).topology
    client = next(s for s in honest.segments if s.party == "client")
    graphdefs = {("client", client.name): honest.graphdefs[("client", client.name)],
                 ("server", "critic"): nnx.split(networks["critic"])[0]}
    return Topology("fsha", (Party("client", ("x", "y")), Party("server")),
                    (client, Segment("server", "critic", ("z",), "critic")),
                    (Loss("server", "critic", None, 1.0, kind="mean"),), ("z",), graphdefs)


def check_client(config: TrainConfig) -> None:
    """Refuse a configuration a dishonest server's protocol does not apply to (see
    `TopologySpec.malicious_server`)."""
    if not spec(config.topology).malicious_server:
        fits = ", ".join(n for n, s in TOPOLOGIES.items() if s.malicious_server)
        raise ConfigError(f"--topology {config.topology}: --server fsha runs on a configuration with one client and "
                          f"one server ({fits})")


def pilot_output_for(config: TrainConfig, fsha: FSHAConfig, dataset: Dataset, private) -> str:
    """"relu" when the client's first messages are all non-negative (what the server sees of
    them at iteration 0 decides), else "linear"; an explicit choice is obeyed."""
    if fsha.pilot_output != "auto":
        return fsha.pilot_output
    built = build_topology(config, dataset.input_shape, dataset.num_classes)
    client = next(s for s in built.topology.segments if s.party == "client")
    x = jnp.asarray(dataset.x_train[np.asarray(private)[: config.batch_size]])
    z = segment_fn(built.topology, client)(built.init(config.seed)["client"][client.name], x)
    transformed = any(v > 0 and DEFENCES[n].acts_on == "message" for n, v in strengths_of(config).items())
    return "relu" if float(jnp.min(z)) >= 0 and not transformed else "linear"


_PROTOCOLS = BoundedCache(16)  # compiled protocols, reused by runs that differ only in the client's seed
# What a step depends on: the client's model and defence, its optimiser; the server's settings.
# (the registered defences' own settings count too: `defence_setting_names`).
_STEP_FIELDS = ("model", "widths", "topology", "cuts", "cut_activation", "alpha", "leakage", "noise_scale", "defenses",
                "lr", "optimizer")


def _draws_from_seed(config: TrainConfig) -> bool:
    """Whether the client's step depends on its seed: a defence it uses draws noise (on its
    messages or its parameters)."""
    return any(v > 0 and DEFENCES[n].acts_on in ("message", "parameters") for n, v in strengths_of(config).items())
_SERVER_FIELDS = ("fsha_lr", "fsha_lr_critic", "gp_weight", "fsha_weight", "fsha_width", "fsha_res_blocks")


def build_protocol(server: str, config: TrainConfig, dataset: Dataset, fsha: FSHAConfig | None = None, *,
                   attack_seed: int = 0, pilot_output: str = "linear", splitguard: bool = False) -> Protocol:
    """A client configured by `config` facing an honest or an FSHA server; with `splitguard`
    each step also returns the client's SplitGuard vector. Protocols whose configurations
    differ only in the client's seed share one compiled step (the seed enters through
    `init` and the data order; the step uses it only for defences that draw noise)."""
    fsha = (fsha or FSHAConfig()).validate()
    seeded = _draws_from_seed(config)
    step_config = config if seeded else config.replace(seed=0)
    client = tuple(getattr(config, k) for k in _STEP_FIELDS + defence_setting_names()) + ((config.seed,) if seeded else ())
    server_key = tuple(getattr(fsha, k) for k in _SERVER_FIELDS) if server == "fsha" else None
    key = (server, client, server_key, fsha.client_nopeek_step, attack_seed, pilot_output, splitguard,
           tuple(dataset.input_shape), dataset.num_classes)
    protocol = _PROTOCOLS.get(key, lambda: _build_protocol(server, step_config, dataset, fsha, attack_seed=attack_seed,
                                                           pilot_output=pilot_output, splitguard=splitguard))
    return dataclasses.replace(protocol, config=config)


def _build_protocol(server, config, dataset, fsha, *, attack_seed, pilot_output, splitguard) -> Protocol:
    if server not in SERVERS:
        raise ConfigError(f"server must be one of {', '.join(SERVERS)}, got {server!r}")
    separate = fsha.client_nopeek_step == "separate" and config.alpha > 0
    check_client(config)
    built = build_topology(config, dataset.input_shape, dataset.num_classes)
    client = next(s for s in built.topology.segments if s.party == "client")
    optimizer = make_optimizer(config.optimizer, config.lr)
    z_shape = tuple(jax.eval_shape(lambda p: segment_fn(built.topology, client)(p, jnp.zeros((1, *dataset.input_shape))),
                                   built.init(0)["client"][client.name]).shape[1:])
    if server == "honest":
        topo = built.topology

        def init(seed):
            params = init_params(built, seed, _client_defences(config), config, dataset.input_shape)
            return ProtocolState(params, {p: optimizer.init(v) for p, v in params.items()}, {}, {})

        @partial(jax.jit, donate_argnums=0)
        def step(state, x, y, x_pub, t, update_client):
            capture = Capture([gradient_name("z")])
            client_p, client_o, grads, aux, sg = _client_side(topo, state.params, state.opt, {"x": x, "y": y}, optimizer,
                                                             config, t, update_client, capture, splitguard, separate)
            updates, server_o = optimizer.update(grads["server"], state.opt["server"], state.params["server"])
            server_p = optax.apply_updates(state.params["server"], updates)
            new = ProtocolState({"client": client_p, "server": server_p}, {**client_o, "server": server_o}, {}, {})
            return new, {"sg": sg, "task_loss": aux["ce"]["y"]}

        return Protocol("honest", config, topo, init, step, z_shape, _make_send(topo, config))

    nets = attacker_networks(z_shape, dataset.input_shape, width=fsha.fsha_width, res_blocks=fsha.fsha_res_blocks,
                             pilot_output=pilot_output, seed=attack_seed)
    graphdefs = {name: nnx.split(m)[0] for name, m in nets.items()}
    topo = fsha_topology(config, dataset.input_shape, dataset.num_classes, nets)
    topo = dataclasses.replace(topo, losses=(Loss("server", "critic", None, fsha.fsha_weight, kind="mean"),))
    ae_opt, critic_opt = optax.adam(fsha.fsha_lr), optax.adam(fsha.fsha_lr_critic)

    def init(seed):
        own_nets = attacker_networks(z_shape, dataset.input_shape, width=fsha.fsha_width, res_blocks=fsha.fsha_res_blocks,
                                     pilot_output=pilot_output, seed=attack_seed)
        own = {"pilot": nnx.split(own_nets["pilot"])[1], "decoder": nnx.split(own_nets["decoder"])[1]}
        client = init_params(built, seed, _client_defences(config), config, dataset.input_shape)["client"]
        params = {"client": client, "server": {"critic": nnx.split(own_nets["critic"])[1]}}
        return ProtocolState(params, {"client": optimizer.init(params["client"]), "server": critic_opt.init(params["server"])},
                             own, ae_opt.init(own))

    def critic(p, z):
        return nnx.merge(graphdefs["critic"], p)(z)

    def ae_loss(own, x_pub):
        z_pub = nnx.merge(graphdefs["pilot"], own["pilot"])(x_pub)
        return jnp.mean((nnx.merge(graphdefs["decoder"], own["decoder"])(z_pub) - x_pub) ** 2), z_pub

    def critic_loss(p, z_pub, z_priv, key):
        gp = gradient_penalty(lambda z: critic(p, z), z_priv, z_pub, key)
        return jnp.mean(critic(p, z_pub)) - jnp.mean(critic(p, z_priv)) + fsha.gp_weight * gp

    @partial(jax.jit, donate_argnums=0)
    def step(state, x, y, x_pub, t, update_client):
        capture = Capture(["z", gradient_name("z")])
        client_p, client_o, _, aux, sg = _client_side(topo, state.params, state.opt, {"x": x, "y": y}, optimizer, config,
                                                     t, update_client, capture, splitguard, separate)
        # The server's own updates, from the same forward pass; the runner's gradient of D is ignored.
        z_priv = jax.lax.stop_gradient(capture.values["z"])
        (ae, z_pub), g_ae = jax.value_and_grad(ae_loss, has_aux=True)(state.own, x_pub)
        gp_key = step_key(attack_seed, Stream.SERVER, t)
        d_loss, g_d = jax.value_and_grad(critic_loss)(state.params["server"]["critic"], jax.lax.stop_gradient(z_pub),
                                                      z_priv, gp_key)
        updates, own_opt = ae_opt.update(g_ae, state.own_opt, state.own)
        own = optax.apply_updates(state.own, updates)
        updates, server_o = critic_opt.update({"critic": g_d}, state.opt["server"], state.params["server"])
        server_p = optax.apply_updates(state.params["server"], updates)
        new = ProtocolState({"client": client_p, "server": server_p}, {**client_o, "server": server_o}, own, own_opt)
        return new, {"sg": sg, "critic": aux["mean"]["critic"], "ae_loss": ae, "critic_loss": d_loss,
                     "client_dcor_batch": aux["leak"].get("z", jnp.zeros(()))}

    return Protocol("fsha", config, topo, init, step, z_shape, _make_send(topo, config), graphdefs)


# ---- running it ----------------------------------------------------------------------


@dataclasses.dataclass
class Targets:
    """The held-out client data the attack is scored on, and what scoring needs."""

    x: np.ndarray
    y: np.ndarray
    x_public: np.ndarray  # the server's own data: its mean is the free baseline
    classifier: Any  # attacks.ReferenceClassifier trained on clean training data


def score(protocol: Protocol, state: ProtocolState, targets: Targets) -> tuple[dict, np.ndarray]:
    """Scores of the FSHA server's reconstructions of the held-out targets, each beside its
    mean-image baseline (`attacks.scores_with_baseline`), the held-out dCor(x, z) of what
    the client sent (`client_dcor`), and the reconstructions."""
    z = protocol.messages(state, targets.x)
    x_hat = protocol.reconstruct(state, z)
    scores = attacks.scores_with_baseline(targets.x, x_hat, targets.x_public, classifier=targets.classifier, y=targets.y)
    scores["client_dcor"] = float(metrics.distance_correlation(targets.x, z, block_size=1024))
    return scores, x_hat


def run_protocol(protocol: Protocol, dataset: Dataset, private, public, steps: int, *, attack_seed: int = 0,
                 guard=None, stop_on_detection: bool = False, on_checkpoint=None, checkpoint_every: int | None = None,
                 on_detection=None, progress: bool = False, desc: str = "fsha"):
    """Run `steps` iterations of the client (on its `private` training samples) with the
    protocol's server (the FSHA server also draws a batch of its `public` samples each
    iteration). `guard` (a `nopeek.dishonest.SplitGuard`) makes the client send fake
    batches and score what comes back; it can stop the run when it fires.

    Callbacks: `on_checkpoint(t, state)` every `checkpoint_every` iterations and at the
    end (a dict it returns is shown beside the progress bar); `on_detection(t, state)` when
    the guard first fires.

    Returns:
      (state, iterations run, per-iteration log {name: list}).
    """
    cfg = protocol.config
    state = protocol.init(cfg.seed)
    x_train, y_train = jnp.asarray(dataset.x_train), np.asarray(dataset.y_train)
    rng_pub = numpy_rng(attack_seed, NumpyStream.FSHA_PUBLIC_BATCHES)
    # the critic's gradient penalty pairs each private message with a public one: a public batch
    # of the client's size, drawn with replacement only where the public set is smaller than that
    pub_batch, pub_replace = cfg.batch_size, len(public) < cfg.batch_size
    private = np.asarray(private)
    if len(private) < cfg.batch_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the client's {len(private)} private training samples")
    order, epoch, pos = batch_order(cfg.seed, 0, [private], cfg.batch_size), 0, 0
    log: dict[str, list] = {}
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, unit="it")
    done = 0
    for t in bar:
        if pos == len(order):
            epoch, pos = epoch + 1, 0
            order = batch_order(cfg.seed, epoch, [private], cfg.batch_size)
        idx = order[pos]
        pos += 1
        y = y_train[idx]
        fake = False
        if guard is not None:
            fake, y = guard.plan(t, y)
        x_pub = (x_train[rng_pub.choice(public, pub_batch, replace=pub_replace)] if protocol.server == "fsha"
                 else x_train[:1])
        state, out = protocol.step(state, x_train[idx], jnp.asarray(y), x_pub, t, jnp.asarray(not fake))
        done = t + 1
        for k, v in out.items():
            if k != "sg":
                log.setdefault(k, []).append(v)
        if guard is not None:
            fired_now = guard.observe(t, np.asarray(out["sg"]), fake)
            if fired_now and on_detection is not None:
                on_detection(done, state)
            if fired_now and stop_on_detection:
                break
        if on_checkpoint is not None and checkpoint_every and (done % checkpoint_every == 0 or done == steps):
            shown = on_checkpoint(done, state)
            if shown:  # the checkpoint's scores beside the progress bar
                bar.set_postfix(shown, refresh=False)
    log = {k: np.asarray(jnp.stack(v)) for k, v in log.items()}
    if any(not np.all(np.isfinite(v)) for v in log.values()):
        raise ConfigError(f"{desc}: the losses became NaN or Inf; try smaller learning rates (--lr, --fsha-lr, --fsha-lr-critic)")
    return state, done, log


def prepare(config: TrainConfig, fsha: FSHAConfig, dataset: Dataset, attack_seed: int):
    """(public indices, private indices, Targets) for an FSHA run on `dataset`."""
    public, private = split_public(dataset.y_train, public_fraction=fsha.public_fraction,
                                   public_classes=fsha.public_classes, seed=attack_seed)
    targets = Targets(dataset.x_test, dataset.y_test, dataset.x_train[public], reference_classifier(dataset))
    return public, private, targets


_CLASSIFIERS = BoundedCache(2)  # data set content -> its reference classifier


def reference_classifier(dataset: Dataset):
    """The clean classifier that reads reconstructions (trained on the whole training set),
    fitted once per data set content (the 2 most recent are kept)."""
    key = fingerprint(dataset.x_train, dataset.y_train)
    return _CLASSIFIERS.get(key, lambda: attacks.ReferenceClassifier(dataset.x_train, dataset.y_train))


def fsha_attack(config: TrainConfig, fsha: FSHAConfig, dataset: Dataset, *, attack_seed: int = 0, steps: int | None = None,
                guard=None, stop_on_detection: bool = False, checkpoint_every: int | None = None, on_grid=None,
                progress: bool = False) -> dict:
    """Train the client of `config` under FSHA and score the server's reconstructions.

    Returns:
      dict: {"history": [{"iteration", mse, psnr, ssim, dcor, classifier_accuracy and
        baseline_*}], "final": the last entry, "detection": the guard's report (or None,
        with the scores at the detection iteration under "at_detection"), "pilot_output",
        "n_public", "n_private", "iterations", "x_hat" (the last reconstructions),
        "samples" (16 held-out originals), "losses" (per iteration), "protocol" and
        "state" (the trained parties), "public" (the server's public sample indices)}.
    """
    fsha.validate()
    check_client(config)
    steps = fsha.fsha_steps if steps is None else steps
    public, private, targets = prepare(config, fsha, dataset, attack_seed)
    pilot_output = pilot_output_for(config, fsha, dataset, private)
    protocol = build_protocol("fsha", config, dataset, fsha, attack_seed=attack_seed, pilot_output=pilot_output,
                              splitguard=guard is not None)
    history, last, at_detection = [], {}, {}

    def checkpoint(t, state):
        scores, x_hat = score(protocol, state, targets)
        history.append({"iteration": t, **scores})
        last["x_hat"] = x_hat
        if on_grid is not None:
            on_grid(t, targets.x[:16], x_hat[:16], scores)
        return {"mse": f"{scores['mse']:.4f}", "mean image": f"{scores['baseline_mse']:.4f}"}

    def detected(t, state):
        at_detection.update({"iteration": t, **score(protocol, state, targets)[0]})

    every = checkpoint_every or fsha.checkpoint_every
    state, done, log = run_protocol(protocol, dataset, private, public, steps, attack_seed=attack_seed, guard=guard,
                                    stop_on_detection=stop_on_detection, on_checkpoint=checkpoint, checkpoint_every=every,
                                    on_detection=detected, progress=progress)
    if not history or history[-1]["iteration"] != done:
        checkpoint(done, state)
    detection = guard.report() if guard is not None else None
    if detection is not None:
        detection["at_detection"] = at_detection or None
    return {"history": history, "final": history[-1], "detection": detection, "pilot_output": pilot_output,
            "n_public": int(len(public)), "n_private": int(len(private)), "iterations": done,
            "x_hat": last["x_hat"], "samples": targets.x[:16], "losses": log, "z_shape": list(protocol.z_shape),
            "protocol": protocol, "state": state, "public": public}


def client_readings(config: TrainConfig, fsha: FSHAConfig, dataset: Dataset, result: dict, attack_seed: int = 0) -> dict:
    """What reading the end of an FSHA run needs, from `fsha_attack`'s result (keys
    class_mean_mse, class_mean_ssim, client_dcor_null95, client_pdcor_label,
    task_probe_accuracy, task_probe_chance):
    the class-mean baseline of the server's reconstructions (the class-mean image of its
    public data for each held-out target's label: what the label alone gives); the client's
    held-out dCor(x, z) null (95% quantile of 100 permutations) and partial dCor given the
    label; and a linear probe z -> label fitted on the public samples' messages and scored on
    the held-out ones, beside chance (does the client still learn its task?)."""
    public, _, targets = prepare(config, fsha, dataset, attack_seed)
    protocol = result["protocol"]
    z_test = protocol.messages(result["state"], targets.x)
    z_public = protocol.messages(result["state"], dataset.x_train[public])
    label = attacks.scores_with_baseline(targets.x, result["x_hat"], targets.x_public, y=targets.y,
                                         y_attacker=dataset.y_train[public])
    reading = readings(targets.x, z_test, one_hot(targets.y, dataset.num_classes), permutations=100)
    probe = attacks.probe_accuracy(z_public, dataset.y_train[public], z_test, targets.y, kind="linear")
    return {"class_mean_mse": label["class_mean_mse"], "class_mean_ssim": label["class_mean_ssim"],
            "client_dcor_null95": reading["dcor_null95"], "client_pdcor_label": reading["pdcor_label"],
            "task_probe_accuracy": probe["accuracy"], "task_probe_chance": probe["chance"]}


SCORE_KEYS = ("mse", "psnr", "ssim", "dcor", "classifier_accuracy")


def run_fsha(config: TrainConfig, fsha: FSHAConfig, out: str, *, attack_seed: int = 0, guard=None,
             progress: bool = True, force: bool = False) -> dict:
    """`nopeek train --server fsha`: train the client under FSHA, write into `out`
    scores.json (config, scores per checkpoint, final scores with `client_readings`' null,
    class-mean baseline and probe, detection), history.csv,
    grids/iter_NNNNNN.png (originals over reconstructions per checkpoint),
    reconstructions.png (the last grid) and curves.png (MSE and SSIM over iterations,
    with the mean-image baselines). The folder is whole or absent: written beside `out` and
    renamed into place at the end, replacing (with `force` only) a run `nopeek train` wrote
    (`check_writable`). Returns the scores.json dict."""
    from nopeek import data as data_lib

    config.validate()
    fsha.validate()
    check_client(config)
    dataset = data_lib.load_config(config)
    split_public(dataset.y_train, public_fraction=fsha.public_fraction, public_classes=fsha.public_classes, seed=attack_seed)
    check_writable(out, ("fsha", "run"), force=force)
    t0 = time.perf_counter()
    title = f"FSHA on {config.dataset} {config.model} cut {','.join(map(str, cuts_of(config, dataset.num_classes)))}"
    if config.alpha > 0:
        title += f", client NoPeek alpha {config.alpha:g}"
    if config.noise_scale > 0:
        title += f", client noise {config.noise_scale:g}"
    tmp = staging_folder(out)
    try:
        scores = _fsha_folder(config, fsha, dataset, tmp, title, attack_seed=attack_seed, guard=guard, progress=progress,
                              t0=t0)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return scores


def _fsha_folder(config, fsha, dataset, tmp: str, title: str, *, attack_seed: int, guard, progress: bool,
                 t0: float) -> dict:
    """`run_fsha`'s work, its files written into `tmp`; returns the scores.json dict."""
    from nopeek.plots import fsha_curves_figure, reconstruction_grid

    def grid(t, x, x_hat, scores):
        reconstruction_grid([x, x_hat], ["original", f"iter {t}"], os.path.join(tmp, "grids", f"iter_{t:06d}.png"),
                            title=f"{title}: iteration {t}, MSE {scores['mse']:.4f} (mean image {scores['baseline_mse']:.4f})")

    result = fsha_attack(config, fsha, dataset, attack_seed=attack_seed, guard=guard, on_grid=grid, progress=progress)
    final = result["final"]
    reconstruction_grid([result["samples"], result["x_hat"][:16]], ["original", "FSHA"],
                        os.path.join(tmp, "reconstructions.png"),
                        title=f"{title}: MSE {final['mse']:.4f} (mean image {final['baseline_mse']:.4f}), SSIM {final['ssim']:.3f}")
    fsha_curves_figure(result["history"], os.path.join(tmp, "curves.png"), title=title,
                       detection=(result["detection"] or {}).get("iteration"))
    columns = ["iteration", *SCORE_KEYS, *(f"baseline_{k}" for k in SCORE_KEYS), "client_dcor"]
    lines = [",".join(columns)] + [",".join(f"{h[c]:.6g}" if c != "iteration" else str(h[c]) for c in columns)
                                   for h in result["history"]]
    atomic_write_text(os.path.join(tmp, "history.csv"), "\n".join(lines) + "\n")
    scores = {**config.to_dict(), **fsha.to_dict(), "attack": "fsha", "attack_seed": attack_seed,
              "fsha_steps": result["iterations"], "n_public": result["n_public"], "n_private": result["n_private"],
              "pilot_output": result["pilot_output"], "z_shape": result["z_shape"],
              **{k: final[k] for k in final if k != "iteration"},
              **client_readings(config, fsha, dataset, result, attack_seed),
              "history": result["history"], "detection": result["detection"], "seconds": time.perf_counter() - t0}
    write_json(os.path.join(tmp, "scores.json"), scores)
    return scores
