"""Training a stack of K split models of any topology in one compiled program.

The K models share topology, architecture and cuts and differ in their seed and in the
strength of each defence (`nopeek.defences`: NoPeek's alpha, the noise's scale, ...); each
model's seed fixes its initialisation, its data order and its random draws, so a stacked
model equals its own separate run. Inside one jitted step the K models run the protocol
(`nopeek.protocol.protocol_gradients`) side by side, as a `jax.vmap` or unrolled in the one
program (`stack_mode="map"`); "auto" chooses by the measurements in bench/train.py. Steps
are driven from Python rather than by `lax.scan`, because XLA:CPU runs convolutions inside
loops about 13x slower. A model whose loss or parameters become NaN or Inf, or whose loss
explodes (`nopeek.training.exploded`), is marked diverged at that epoch; the others go on.

References: Vepakomma et al., "Reducing leakage in distributed deep learning for
sensitive health data", ICLR 2019 AI4SG workshop, Eq. (1).
"""

from __future__ import annotations

import dataclasses
import os
import time
from functools import partial
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import metrics

from nopeek.data import Dataset
from nopeek.defences import (
    DEFENCES, Context, Releases, build_defence, check_combination, check_defence, defence_parameters, dp_guarantee,
    with_defence_parameters,
)
from nopeek.core import env_count
from nopeek.errors import ConfigError
from nopeek.protocol import (
    Built, ModelList, Setup, build, check_logits, forward, model_at, over_stack, padded_size, protocol_gradients,
    resolve_stack_mode, shard_models, spec, stack_models,
)
from nopeek.training._config import TrainConfig, cuts_of, make_optimizer, strengths_of
from nopeek.training import _resume
from nopeek.training._health import exploded
from nopeek.training._leakage import (
    DCOR_BLOCK, READINGS, bucketed_readings, leak_entries, measure_leakage, measure_readings, one_hot, readings_width,
)


def has_conv(built: Built) -> bool:
    """Whether any segment of the topology convolves (read from the graphs, so a registered
    model of one's own is judged by what it is, not by its name)."""
    from flax import nnx

    kinds = (nnx.Conv, nnx.ConvTranspose)
    return any(isinstance(getattr(node, "type", None), type) and issubclass(node.type, kinds)
               for graphdef in built.topology.graphdefs.values() for node in getattr(graphdef, "nodes", ()))


def topology_setup(config: TrainConfig, input_shape, num_classes: int) -> Setup:
    """What the topology builder of `config.topology` is given for data of the given shape."""
    return Setup(
        model=config.model, widths=tuple(config.widths), input_shape=tuple(input_shape), num_classes=num_classes,
        cuts=cuts_of(config, num_classes), clients=config.clients, merge=config.merge, slicing=config.slicing,
        tasks=tuple(config.tasks), task_weights=tuple(config.task_weights), handoff=config.handoff,
        nopeek_hops=config.nopeek_hops, cut_activation=config.cut_activation,
    )


def build_topology(config: TrainConfig, input_shape, num_classes: int) -> Built:
    """The configured topology of `config` for data of the given shape."""
    check_logits(config.model, input_shape, num_classes, config.widths)  # a registered model must end in logits
    return build(config.topology, topology_setup(config, input_shape, num_classes))


@dataclasses.dataclass
class StackState:
    """Parameters `{party: {segment: State}}` and optimiser states `{party: ...}` of K models,
    each leaf with a leading axis K."""

    params: Any
    opt: Any


jax.tree_util.register_dataclass(StackState, data_fields=["params", "opt"], meta_fields=[])


def init_params(built: Built, seed: int, defences=(), settings=None, input_shape=None) -> dict:
    """One model's parameters `{party: {segment: State}}` from its seed, with the parameters of
    the defences in `defences` that own some (`nopeek.defences.defence_parameters`; they need
    the input shape)."""
    params = built.init(int(seed))
    if any(DEFENCES[n].owns_parameters for n in defences):
        params = with_defence_parameters(params, defence_parameters(built, params, defences, int(seed), settings,
                                                                    input_shape))
    return params


def init_stack(built: Built, seeds: Sequence[int], optimizer, mode: str = "vmap", *, defences=(), settings=None,
               input_shape=None) -> StackState:
    """K models (one per seed), stacked as `mode` keeps them (see `nopeek.protocol.stack_models`);
    one optimiser state per party and model. `defences`: the names in the program (their
    own parameters, `init_params`)."""
    params = [init_params(built, s, defences, settings, input_shape) for s in seeds]
    # One program for every party of every model, not one per parameter shape (or per party).
    opt = jax.jit(lambda ps: [{party: optimizer.init(p) for party, p in model.items()} for model in ps])(params)
    return StackState(stack_models(params, mode), stack_models(opt, mode))


def make_step_fn(built: Built, optimizer, config: TrainConfig, stack_mode: str, *, warmup_steps: int = 0):
    """A jitted `step(state, hparams, x_train, y_train, idx, step) -> (state, (loss, ce, leak,
    finite))`, each of the four (K,).

    hparams: {"seed": (K,), "strength": {defence name: (K,)}}: the defences in the program
    are those named there (see `stack_hparams`). idx: (K, batch) sample indices, one row per
    model. One optimisation step of all K models; the state's buffers are donated. With
    `warmup_steps`, defences that ramp up (NoPeek's alpha) do so over that many steps.
    leak: the mean over messages of NoPeek's D(x, z) on the batch; finite: whether every
    parameter of the model is finite after the step.
    """
    topo = built.topology

    def model_step(params, opt, hp, x, y, step):
        context = Context(hp["seed"], step, config, warmup_steps=warmup_steps)
        defence = build_defence(hp["strength"], context)
        grads, aux = protocol_gradients(topo, params, built.prepare(x, y), defence=defence,
                                        task_weight=config.task_weight)
        new_params, new_opt = {}, {}
        for party in params:  # each party updates its own parameters with its own optimiser state
            updates, new_opt[party] = optimizer.update(grads[party], opt[party], params[party])
            new_params[party] = optax.apply_updates(params[party], updates)
        leaks = [jnp.mean(v) for v in aux["leak"].values()]
        leak = jnp.mean(jnp.stack(leaks)) if leaks else jnp.zeros(())
        first_task = next(iter(built.tasks))
        # Whether every new parameter is finite: the health check's, in this program (a separate
        # one after each epoch would be one more to compile per run for a reduction this small).
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(new_params)]))
        return (new_params, new_opt), (aux["loss"], aux["ce"][first_task], leak, finite)

    stacked = over_stack(model_step, stack_mode, (0, 0, 0, 0, 0, None), per_model_outputs=(0,))

    @partial(jax.jit, donate_argnums=0)
    def step(state: StackState, hparams, x_train, y_train, idx, step_index):
        models, stats = stacked(state.params, state.opt, hparams, x_train[idx], y_train[idx], step_index)
        if isinstance(models, ModelList):
            return StackState(ModelList(m[0] for m in models), ModelList(m[1] for m in models)), stats
        return StackState(*models), stats

    return step


def batch_order(seed: int, epoch: int, shards: Sequence[np.ndarray], batch: int) -> np.ndarray:
    """(steps, batch) sample indices of one epoch: each shard in turn, permuted by
    `(seed, epoch, shard)`, its last partial batch dropped. One shard = plain training."""
    out = []
    for c, shard in enumerate(shards):
        perm = np.asarray(shard)[np.random.default_rng([seed, epoch, c]).permutation(len(shard))]
        steps = len(perm) // batch
        out.append(perm[: steps * batch].reshape(steps, batch))
    return np.concatenate(out) if out else np.zeros((0, batch), np.int64)


def in_slices(fn, size: int | None):
    """`fn(params, hp, x, y, sample_index)` computed `size` samples at a time (`lax.map`
    over slices; the last padded with copies of the last sample, whose rows are dropped)
    when x holds more; as it is for None. Each output's sample axis is the one of the
    slice's size (a message of several clients is (clients, n, ...); where another axis has
    that size too, the one that grows with the batch, from the shapes at one more sample); an
    output without one is taken from the first slice. (An output with one axis of exactly
    the slice's size that is not its samples would be read as them: the evaluation's
    outputs, messages, logits and labels, all hold samples.)

    Why: on the CPU, XLA's convolutions over a large batch run slower per sample than over
    a few hundred (the cnn's evaluation forward pass of 1,000 mnist5k images: 85 ms whole,
    57 ms by slices of 256 on the AVX-512 Xeon; bench/README, "the evaluation by slices")."""
    if size is None:
        return fn

    def sliced(params, hp, x, y, sample_index):
        n = x.shape[0]
        if n <= size:
            return fn(params, hp, x, y, sample_index)
        count = -(-n // size)
        pad = count * size - n

        def slices(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            return a.reshape(count, size, *a.shape[1:])

        out = jax.lax.map(lambda args: fn(params, hp, *args), (slices(x), slices(y), slices(sample_index)))
        leaves, tree = jax.tree.flatten(out)
        axes = [[i for i, m in enumerate(a.shape[1:]) if m == size] for a in leaves]  # each slice's outputs
        if any(len(found) > 1 for found in axes):  # another axis of the slice's size: tell them apart
            bigger = jax.tree.leaves(jax.eval_shape(fn, params, hp, *(
                jax.ShapeDtypeStruct((size + 1, *a.shape[1:]), a.dtype) for a in (x, y, sample_index))))
            axes = [[i for i in found if b.shape[i] == size + 1] for found, b in zip(axes, bigger)]
        axes = [found[0] if found else None for found in axes]

        def joined(a, axis):
            if axis is None:
                return a[0]
            a = jnp.moveaxis(a, 0, axis)  # (..., count, size, ...)
            a = a.reshape(*a.shape[:axis], count * size, *a.shape[axis + 2:])
            return jax.lax.slice_in_dim(a, 0, n, axis=axis)

        return jax.tree.unflatten(tree, [joined(a, axis) for a, axis in zip(leaves, axes)])

    return sliced


def make_eval_fn(built: Built, config: TrainConfig, stack_mode: str, messages: Sequence[str]):
    """A jitted `evaluate(params, hparams, x, y, sample_index) -> (messages, logits, labels)`.

    messages: {name: (K, n, ...)} as sent (each defence's evaluation transform, sample i's
    draws from its position); logits: {label key: (K, n, classes)}; labels: {label key: (K, n)}.
    On the CPU each model's forward pass runs `EVAL_SLICE` samples at a time (`in_slices`).
    """
    topo = built.topology

    def one(params, hp, x, y, sample_index):
        defence = build_defence(hp["strength"], Context(hp["seed"], settings=config, evaluation=True))
        values = forward(topo, params, built.prepare(x, y), defence=defence, sample_index=sample_index)
        return ({m: values[m] for m in messages}, {loss.labels: values[loss.logits] for loss in topo.losses},
                {loss.labels: values[loss.labels] for loss in topo.losses})

    size = eval_slice()
    return jax.jit(over_stack(in_slices(one, size), stack_mode, (0, 0, None, None, None)))


def eval_slice() -> int | None:
    """Samples per slice of the evaluation's forward pass: `EVAL_SLICE` on the CPU (the
    environment's NOPEEK_EVAL_SLICE if set; 0 for whole chunks), None on accelerators."""
    if jax.default_backend() != "cpu":
        return None
    size = env_count("NOPEEK_EVAL_SLICE", EVAL_SLICE, "0: whole chunks")
    return size if size > 0 else None


def evaluate(eval_fn, params, hparams, x, y, chunk: int = 1024, *, keep_messages: bool = True):
    """Per-task accuracy {labels: (K,)} and messages {name: (K, n, ...)} for all of x, in chunks
    (messages empty when `keep_messages` is False)."""
    sent, correct = {}, {}
    for start in range(0, len(x), chunk):
        xb, yb = jnp.asarray(x[start : start + chunk]), jnp.asarray(y[start : start + chunk])
        index = jnp.arange(start, start + len(xb))
        msgs, logits, labels = eval_fn(params, hparams, xb, yb, index)
        for m, v in msgs.items() if keep_messages else ():
            sent.setdefault(m, []).append(np.asarray(v))
        for key, lg in logits.items():
            correct[key] = correct.get(key, 0) + np.asarray(jnp.sum(jnp.argmax(lg, -1) == labels[key], axis=-1))
    accuracy = {k: v / len(x) for k, v in correct.items()}
    return accuracy, {m: np.concatenate(v, axis=1) for m, v in sent.items()}


def make_epoch_eval(eval_fn, entries, data_test: dict, n_probe: int, permutations: int, chunk: int = 1024):
    """The per-epoch evaluation: `epoch_eval(params, hparams, x_test, y_test, probe_x,
    probe_labels, readings) -> (accuracy {labels: (K,)}, probe {name: (K,)}, sent)`.
    entries: the run's leak entries (the first is the probe's message); data_test: the
    prepared held-out inputs {name: (n, ...)} (their shapes give the readings' widths).

    sent: when the test set fits in one chunk, its messages {name: (K, n, ...)} as sent (on
    the device, as `evaluate` returns them), else None: after the last epoch the training
    loop takes the run's test accuracy and messages from its evaluation instead of
    compiling and running the evaluation program again.

    The test set's first chunk (at least the probe's n_probe samples) runs in one program
    with the probe's plain dCor (the first n_probe messages of the first entry) and
    dCor(probe_x, probe_labels) (the probe's `dcor_label`: the same every epoch, computed
    in each, an n_probe^2 reduction next to the forward pass), so an epoch's
    evaluation is one dispatch (two when it takes the readings) and one transfer; any further
    chunks only count correct predictions. With `readings` True the probe also holds the
    readings of `bucketed_readings` (U-statistic dCor, the permutation null of
    `permutations` draws, partial dCor given the label), else they are NaN (dcor_label
    excepted): the null's permutations cost about as much as the held-out forward pass, so
    the training loop takes them at the last epoch only unless asked for every epoch. The
    readings are `bucketed_readings` itself, called on the probe's messages, not a second
    version of the first chunk's program: the run's final readings (`measure_readings`) call
    the same program (one for all the run's messages of the same n, their features padded
    to a common bucket), and when the probe is the whole held-out set the last epoch's
    readings are the first entry's final ones (computed once).
    """
    chunk = max(chunk, n_probe)
    block = None if n_probe <= DCOR_BLOCK else DCOR_BLOCK
    entry = entries[0]  # the probe's message
    width = []  # the readings' feature widths: every entry's (readings_width), found at the first call

    @jax.jit
    def first_chunk(params, hparams, x, y, index, probe_x, probe_labels):
        msgs, logits, labels = eval_fn(params, hparams, x, y, index)
        correct = {key: jnp.sum(jnp.argmax(lg, -1) == labels[key], axis=-1) for key, lg in logits.items()}
        z = entry.view(msgs[entry.message], models_axis=True)[:, :n_probe].astype(jnp.float32)
        dcor = jax.lax.map(lambda zk: metrics.distance_correlation(probe_x, zk, block_size=block), z)
        label = (jnp.full(dcor.shape, jnp.nan, jnp.float32) if n_probe < 4 else  # as the readings: n >= 4
                 jnp.broadcast_to(metrics.distance_correlation(probe_x, probe_labels, block_size=block), dcor.shape))
        return correct, dcor, label.astype(jnp.float32), z, msgs

    @jax.jit
    def later_chunk(params, hparams, x, y, index):
        _, logits, labels = eval_fn(params, hparams, x, y, index)
        return {key: jnp.sum(jnp.argmax(lg, -1) == labels[key], axis=-1) for key, lg in logits.items()}

    def epoch_eval(params, hparams, x, y, probe_x, probe_labels, readings: bool = True):
        n = x.shape[0]
        correct, dcor, label, z, msgs = first_chunk(params, hparams, x[:chunk], y[:chunk], jnp.arange(min(chunk, n)),
                                                    probe_x, probe_labels)
        for start in range(chunk, n, chunk):
            more = later_chunk(params, hparams, x[start : start + chunk], y[start : start + chunk],
                               jnp.arange(start, min(start + chunk, n)))
            correct = {key: correct[key] + more[key] for key in correct}
        if readings and n_probe >= 4:  # the U-statistic and the null need at least 4 samples
            if not width:
                width.append(readings_width(entries, data_test, msgs))
            probe = bucketed_readings(probe_x, z, probe_labels, permutations=permutations, width=width[0])
        else:
            probe = {"dcor": dcor, **{name: jnp.full_like(dcor, jnp.nan) for name in READINGS}, "dcor_label": label}
        correct, probe = jax.device_get((correct, probe))
        return ({key: np.asarray(v) / n for key, v in correct.items()}, {k: np.asarray(v) for k, v in probe.items()},
                msgs if n <= chunk else None)

    return epoch_eval


EVAL_SLICE = 256  # `in_slices`: 128 and 64 measured no faster than 256, 500 and 1,000 slower


def _epoch_means(stats: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An epoch's per-step (loss, ce, leak, ...) (each (K,)) summed in step order in float32
    (as adding them on the device would) and divided by the step count: (loss, ce, leak)."""
    totals = [np.array(s, np.float32) for s in stats[0][:3]]
    for step in stats[1:]:
        for total, value in zip(totals, step[:3]):
            total += value
    return tuple(t / len(stats) for t in totals)


@dataclasses.dataclass
class StackResult:
    """What `train_stack` returns. Arrays over models have a leading axis K."""

    config: TrainConfig
    built: Built
    state: StackState
    hparams: dict  # "seed": (K,); "strength": {defence: (K,)} (the defences in the program)
    history: list[dict[str, list[float]]]  # per epoch: name -> K values
    task_accuracy: dict[str, np.ndarray]  # label key -> (K,)
    leakage: dict[tuple[str, str], np.ndarray]  # (party, message) -> (K,) held-out dCor
    readings: dict  # (party, message) -> {reading: (K,)}: dcor_u, dcor_null95, dcor_pvalue, dcor_label, pdcor_label
    diverged_epoch: np.ndarray  # (K,) first epoch whose loss or parameters were not finite, or loss exploded; 0 = never
    diverged_loss: np.ndarray  # (K,) the training loss of that epoch (NaN, Inf or exploded), NaN if never
    seconds: float
    messages_test: dict[str, np.ndarray]  # name -> (K, n_test, ...) as sent
    eval_fn: Any  # the jitted evaluate(params, hparams, x, y, sample_index)
    shards: list  # training-set shards (round robin), one for other topologies
    strengths: list[dict[str, float]] = dataclasses.field(default_factory=list)  # per model: {defence: strength > 0}
    val_accuracy: dict = dataclasses.field(default_factory=dict)  # label key -> (K,) on the validation split ({} without one)
    val_leakage: dict = dataclasses.field(default_factory=dict)  # (party, message) -> (K,) dCor on the validation split
    first_loss: np.ndarray | None = None  # (K,) the loss of the first step (at initialisation)
    releases: Releases | None = None  # what training did with each record (epochs, steps, N, B): the DP accounting
    checkpoint: str | None = None  # the epoch checkpoint file written (train_stack's resume_dir), for the caller to remove
    seconds_resumed: float = 0.0  # of `seconds`, those spent by the interrupted runs it resumed

    def privacy(self, k: int) -> dict:
        """Model k's differential-privacy guarantee (`nopeek.defences.dp_guarantee`): dp_epsilon,
        dp_epsilon_epoch, dp_delta, dp_covers; {} when none of its defences claims one."""
        if self.releases is None or not self.strengths:
            return {}
        return dp_guarantee(self.strengths[k], self.config, self.releases)

    @property
    def test_accuracy(self) -> np.ndarray:
        """(K,) accuracy on the first task (the only one unless multi_task)."""
        return self.task_accuracy[next(iter(self.built.tasks))]

    @property
    def primary(self) -> tuple[str, str]:
        """(party, message) of the data holder's first message: the `dcor` of a run."""
        return next(iter(self.leakage))

    @property
    def dcor(self) -> np.ndarray:
        """(K,) held-out dCor of the primary message."""
        return self.leakage[self.primary]

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_epoch > 0

    def model_params(self, k: int):
        """`{party: {segment: State}}` of model k, without the stack axis."""
        return model_at(self.state.params, k)

    def model_hparams(self, k: int) -> dict:
        """Model k's hyperparameters (its seed and each defence's strength), without the stack axis."""
        return jax.tree.map(lambda a: a[k], self.hparams)


def _finite_mean(values) -> float:
    """Mean of the finite values; NaN (without numpy's all-NaN warning on stderr) when there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def model_strengths(config: TrainConfig, *, alphas=None, noise_scales=None, strengths=None, seeds=None):
    """(per-model {defence: strength}, per-model seeds) of a stack: the config's strengths
    (`strengths_of`) overridden per model by `alphas` (NoPeek), `noise_scales` (the noise)
    and `strengths` ({defence: strength} each). Lists of length 1 are broadcast."""
    lists = {
        "alpha": list(alphas) if alphas is not None else None,
        "noise_scale": list(noise_scales) if noise_scales is not None else None,
        "strengths": list(strengths) if strengths is not None else None,
        "seed": list(seeds) if seeds is not None else [config.seed],
    }
    k = max(len(v) for v in lists.values() if v is not None)
    for name, values in lists.items():
        if values is not None and len(values) not in (1, k):
            raise ValueError(f"{name}: {len(values)} values for a stack of {k} models")
    base = strengths_of(config)
    out = []
    for i in range(k):
        pick = lambda name: lists[name][i if len(lists[name]) > 1 else 0]  # noqa: E731
        mine = dict(base)
        if lists["alpha"] is not None:
            mine["nopeek"] = pick("alpha")
        if lists["noise_scale"] is not None:
            mine["noise"] = pick("noise_scale")
        if lists["strengths"] is not None:
            mine.update(pick("strengths"))
        out.append(mine)
    seeds = [pick_seed for pick_seed in (lists["seed"] * k if len(lists["seed"]) == 1 else lists["seed"])]
    for mine in out:
        for name, value in mine.items():
            if not (np.isfinite(value) and value >= 0):
                label = {"nopeek": "alpha", "noise": "noise_scale"}.get(name, f"{name} strength")
                raise ConfigError(f"{label}s must be finite and >= 0, got {value}")
    return out, seeds


def stack_hparams(per_model: Sequence[Mapping[str, float]], seeds: Sequence[int]) -> dict:
    """{"seed": (K,), "strength": {name: (K,)}} for the defences in the program: those some
    model uses (strength > 0) and those built into every step (`always`)."""
    used = [name for name, s in DEFENCES.items() if s.always or any(m.get(name, 0.0) > 0 for m in per_model)]
    return {"seed": jnp.asarray(seeds, jnp.int32),
            "strength": {name: jnp.asarray([m.get(name, 0.0) for m in per_model], jnp.float32) for name in used}}


def data_shards(config: TrainConfig, dataset: Dataset) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(training shards, test shards or None): each data holder's sample indices when the
    configuration shares the samples among them (`TopologySpec.shard`), or one shard of the
    whole training set.

    Raises:
      ConfigError: the partition cannot be made, leaves a data holder without training
        samples or with fewer than 2 held-out ones (its leakage cannot be measured), or no
        client has a whole batch.
    """
    topology = spec(config.topology)
    shards, shards_test = [np.arange(len(dataset.x_train))], None
    own = topology.shard(dataset.y_train, config.clients, config.partition, config.dirichlet_alpha, config.split_seed)
    if own is not None:
        shards = own
        shards_test = topology.shard(dataset.y_test, config.clients, config.partition, config.dirichlet_alpha,
                                     config.split_seed + 1)
        for i, (train, test) in enumerate(zip(shards, shards_test)):
            if len(train) < 1 or len(test) < 2:
                how = (f"--partition {config.partition} --dirichlet-alpha {config.dirichlet_alpha:g}"
                       if config.partition == "dirichlet" else f"--partition {config.partition}")
                raise ConfigError(f"{how} leaves client {i + 1} of {config.clients} with {len(train)} training and "
                                  f"{len(test)} held-out samples (each needs at least 1 and 2); raise "
                                  "--dirichlet-alpha, lower --clients or use more data")
    if sum(len(s) // config.batch_size for s in shards) == 0:
        raise ConfigError(f"--batch-size {config.batch_size} exceeds the training samples of every client "
                          f"({', '.join(str(len(s)) for s in shards)})")
    return shards, shards_test


def train_stack(
    config: TrainConfig,
    dataset: Dataset,
    *,
    alphas: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    noise_scales: Sequence[float] | None = None,
    strengths: Sequence[Mapping[str, float]] | None = None,
    stack_mode: str = "auto",
    progress: bool = True,
    desc: str = "train",
    resume_dir: str | None = None,
    log=None,
    built: Built | None = None,
) -> StackResult:
    """Train K split models together; K = the common length of the per-model lists.

    Args:
      config: topology, architecture, cuts, optimiser, epochs, batch size; the defaults for
        missing lists (`config.seed`, and the config's defences and strengths).
      dataset: the data (its train/test split is the dataset's).
      alphas: per-model NoPeek weights (a length-1 list is broadcast, as for every list).
      seeds: per-model seeds.
      noise_scales: per-model noise scales.
      strengths: per-model {defence name: strength} of any registered defence.
      resume_dir: a folder for epoch checkpoints (`nopeek.training._resume`): training
        resumes from this training's checkpoint there, if any, and saves one after epochs
        (always after the last). The caller removes it (`StackResult.checkpoint`) once its
        results are safe. None: nothing saved.
      log: where lines about resuming go (resumed after which epoch; a checkpoint that could
        not be read or written); None: resuming is silent and problems are Python warnings.
      built: the topology `build_topology(config, dataset.input_shape, dataset.num_classes)`
        returns, where the caller has built it already (`nopeek train` does, to check the
        options before loading data). One built for another setup (its `key`), or None: it
        is built here.

    Returns:
      StackResult with per-task test accuracy, held-out dCor of every message, the history,
      and which models diverged.
    """
    config.validate()
    per_model, seed_list = model_strengths(config, alphas=alphas, noise_scales=noise_scales, strengths=strengths,
                                           seeds=seeds)
    k = len(per_model)
    if built is None or built.key != (config.topology, topology_setup(config, dataset.input_shape,
                                                                       dataset.num_classes)):
        built = build_topology(config, dataset.input_shape, dataset.num_classes)
    for mine in per_model:
        for name, value in mine.items():
            if value > 0:
                check_defence(name, value, dataset.num_classes, spec(config.topology))
        check_combination(mine)
    shards, shards_test = data_shards(config, dataset)
    mode = resolve_stack_mode(stack_mode, has_conv(built))
    if mode == "vmap" and padded_size(k) > k:  # as many models on every device; the padding is dropped
        per_model = per_model + [per_model[-1]] * (padded_size(k) - k)
        seed_list = seed_list + [seed_list[-1]] * (padded_size(k) - k)
    hparams = stack_hparams(per_model, seed_list)
    optimizer = make_optimizer(config.optimizer, config.lr)
    state = init_stack(built, seed_list, optimizer, mode, defences=tuple(hparams["strength"]), settings=config,
                       input_shape=dataset.input_shape)
    digest = checkpoint = saved = None
    if resume_dir is not None:
        digest = _resume.fingerprint(config.to_dict(), per_model, seed_list, mode, dataset)
        checkpoint = _resume.path_of(resume_dir, digest)
        saved = _resume.load(checkpoint, digest, state, log)
    if saved is not None:
        state = saved.state
        if log is not None:
            log(f"resumed after epoch {saved.epoch} of {config.epochs}"
                + (" (training had finished)" if saved.finished else "") + f" from {checkpoint}")
    if mode == "vmap":
        state, hparams = shard_models(state), shard_models(hparams)
    step_fn = make_step_fn(built, optimizer, config, mode,
                           warmup_steps=int(round(config.alpha_warmup * sum(len(s) // config.batch_size for s in shards))))
    entries = leak_entries(built, shards_test)
    eval_fn = make_eval_fn(built, config, mode, sorted({e.message for e in entries}))
    # Host arrays go over with device_put: a transfer (a copy, never aliasing the data set's memory),
    # where `jnp.asarray` compiles a program per shape.
    to_device = partial(jax.device_put, may_alias=False)
    data_test = built.prepare(to_device(dataset.x_test), to_device(dataset.y_test))

    x_train, y_train = to_device(dataset.x_train), to_device(dataset.y_train)
    n_probe = min(config.dcor_batch, len(dataset.x_test))
    first = entries[0]
    probe_x = jax.device_put(np.asarray(first.source_view(np.asarray(data_test[first.source]))[:n_probe], np.float32))
    first_task = next(iter(built.tasks))
    labels_test = one_hot(np.asarray(data_test[first_task]), built.tasks[first_task])
    probe_labels = jax.device_put(np.asarray(labels_test[:n_probe]))  # the probe is the first n_probe held-out samples
    epoch_eval = make_epoch_eval(eval_fn, entries, data_test, n_probe, config.null_permutations)
    x_test, y_test = to_device(dataset.x_test), to_device(dataset.y_test)
    k_run = len(seed_list)
    diverged_epoch = np.zeros(k_run, np.int64)
    diverged_loss = np.full(k_run, np.nan)
    first_loss = None
    history = []
    start, seconds_before, finished = 0, 0.0, False
    if saved is not None:
        start, seconds_before, finished, history = saved.epoch, saved.seconds, saved.finished, saved.history
        diverged_epoch, diverged_loss, first_loss = saved.diverged_epoch, saved.diverged_loss, saved.first_loss
    saver = _resume.Saver(checkpoint, digest, log)
    last_sent = None
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.epochs if not finished else start), initial=start, total=config.epochs, desc=desc,
               disable=not progress, unit="epoch", leave=False)
    if start:
        bar.set_postfix_str(f"resumed after epoch {start}")
    for epoch in bar:
        orders = np.stack([batch_order(int(s), epoch, shards, config.batch_size) for s in seed_list], axis=1)
        stats = []
        for i, idx in enumerate(orders):
            state, step_stats = step_fn(state, hparams, x_train, y_train, jax.device_put(idx), epoch * len(orders) + i)
            stats.append(step_stats)
        stats = jax.device_get(stats)  # one transfer per epoch, not per step
        if first_loss is None:
            first_loss = np.asarray(stats[0][0])  # the loss at initialisation: what an explosion is measured against
        loss, ce, leak = _epoch_means(stats)
        healthy = ~exploded(loss, first_loss) & np.asarray(stats[-1][3])  # every parameter finite after the epoch
        newly = (~healthy) & (diverged_epoch == 0)
        diverged_epoch[newly] = epoch + 1
        diverged_loss[newly] = loss[newly]
        accuracy, probe, last_sent = epoch_eval(state.params, hparams, x_test, y_test, probe_x, probe_labels,
                                                readings=(config.epoch_readings or epoch == config.epochs - 1
                                                          or bool(np.all(diverged_epoch > 0))))  # the last epoch run
        row = {"train_loss": loss.tolist(), "train_ce": ce.tolist(), "train_dcor_batch": leak.tolist(),
               "epoch": epoch + 1, "heldout_dcor": probe["dcor"].tolist(),
               "test_accuracy": accuracy[first_task].tolist()}
        for name in READINGS:
            row[f"heldout_{name}"] = probe[name].tolist()
        history.append(row)
        bar.set_postfix(acc=f"{_finite_mean(row['test_accuracy']):.3f}", dcor=f"{_finite_mean(probe['dcor']):.3f}")
        stop = bool(np.all(diverged_epoch > 0))  # every model of the stack diverged: nothing left to train
        last = stop or epoch == config.epochs - 1
        saver.after_epoch(_resume.Progress(epoch + 1, last, state, history, diverged_epoch, diverged_loss, first_loss,
                                           seconds_before + time.perf_counter() - t0), last=last)
        if stop:
            break
    if last_sent is not None:  # the last epoch evaluated the final parameters on the whole test set
        task_accuracy, sent = accuracy, {m: np.asarray(v) for m, v in last_sent.items()}
    else:
        task_accuracy, sent = evaluate(eval_fn, state.params, hparams, dataset.x_test, dataset.y_test)
    test_arrays = {k_: np.asarray(v) for k_, v in data_test.items()}
    # The last epoch took the probe's readings with the final parameters: when the probe is the
    # whole held-out set they are the first entry's, as measure_readings would compute them.
    known = ({(first.party, first.label): probe} if last_sent is not None and n_probe == len(dataset.x_test)
             and first.subset is None and n_probe >= 4 else None)
    measured = measure_readings(entries, test_arrays, sent, labels_test, permutations=config.null_permutations,
                                known=known)  # the held-out dCor and its readings, one program per entry shape
    leakage = {name: values["dcor"] for name, values in measured.items()}
    leak_readings = {name: {r: values[r] for r in READINGS} for name, values in measured.items()}
    val_accuracy, val_leakage = {}, {}
    if dataset.has_validation:  # what an operating point is chosen on: never the test split
        val_accuracy, val_sent = evaluate(eval_fn, state.params, hparams, dataset.x_val, dataset.y_val)
        val_arrays = {k_: np.asarray(v) for k_, v in built.prepare(jnp.asarray(dataset.x_val),
                                                                    jnp.asarray(dataset.y_val)).items()}
        val_leakage = measure_leakage([dataclasses.replace(e, subset=None) for e in entries], val_arrays, val_sent)
    if k_run > k:  # drop the models that only padded the stack to the device count
        keep = lambda a: a[:k]  # noqa: E731
        state = StackState(jax.tree.map(keep, state.params), jax.tree.map(keep, state.opt))
        hparams = jax.tree.map(keep, hparams)
        history = [{name: (v[:k] if isinstance(v, list) else v) for name, v in row.items()} for row in history]
        task_accuracy = {name: keep(v) for name, v in task_accuracy.items()}
        leakage = {name: keep(v) for name, v in leakage.items()}
        leak_readings = {name: {r: keep(v) for r, v in values.items()} for name, values in leak_readings.items()}
        val_accuracy = {name: keep(v) for name, v in val_accuracy.items()}
        val_leakage = {name: keep(v) for name, v in val_leakage.items()}
        sent = {name: keep(v) for name, v in sent.items()}
        diverged_epoch, diverged_loss = keep(diverged_epoch), keep(diverged_loss)
        first_loss = keep(first_loss)
    return StackResult(
        config=config, built=built, state=state, hparams=jax.tree.map(np.asarray, hparams),
        history=history, task_accuracy=task_accuracy, leakage=leakage, readings=leak_readings,
        diverged_epoch=diverged_epoch,
        diverged_loss=diverged_loss, seconds=seconds_before + time.perf_counter() - t0, messages_test=sent,
        eval_fn=eval_fn, checkpoint=checkpoint if checkpoint is not None and os.path.exists(checkpoint) else None,
        seconds_resumed=seconds_before,
        shards=shards, strengths=[{n: v for n, v in m.items() if v > 0} for m in per_model[:k]],
        val_accuracy=val_accuracy, val_leakage=val_leakage, first_loss=first_loss,
        releases=Releases(epochs=len(history), steps_per_epoch=sum(len(s) // config.batch_size for s in shards),
                          samples=int(sum(len(s) for s in shards)), batch_size=config.batch_size),
    )
