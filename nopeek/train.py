"""Training a stack of K split models of any topology in one compiled program.

The K models share topology, architecture and cuts and differ in `alpha`, seed and noise
scale; each model's seed fixes its initialisation, its data order and its noise, so a
stacked model equals its own separate run. Inside one jitted step the K models run the
protocol (`nopeek.engine.protocol_gradients`) side by side, as a `jax.vmap` or unrolled
in the one program (`stack_mode="map"`); "auto" chooses by the measurements in
bench/train.py. Steps are driven from Python rather than by `lax.scan`, because XLA:CPU
runs convolutions inside loops about 13x slower. A model whose loss or parameters become
NaN or Inf is marked diverged at that epoch; the others go on.

References: Vepakomma et al., "Reducing leakage in distributed deep learning for
sensitive health data", ICLR 2019 AI4SG workshop, Eq. (1).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import metrics
from nopeek.config import ConfigError, TrainConfig
from nopeek.data import Dataset
from nopeek.engine import forward, protocol_gradients
from nopeek.models import check_logits
from nopeek.partition import partition
from nopeek.stacking import ModelList, model_at, over_stack, padded_size, resolve_stack_mode, shard_models, stack_models
from nopeek.topologies import Built, Setup, build

DCOR_BLOCK = 1024  # rows per block for held-out dCor over a whole test set
_TRAIN_NOISE, _TEST_NOISE, _LABEL_NOISE = 0, 1, 2  # separate key streams per model seed


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(lr)
    if name == "sgd":
        return optax.sgd(lr, momentum=0.9)
    raise ConfigError(f"unknown optimizer {name!r}")


def has_conv(built: Built) -> bool:
    """Whether any segment of the topology convolves (read from the graphs, so a registered
    model of one's own is judged by what it is, not by its name)."""
    from flax import nnx

    kinds = (nnx.Conv, nnx.ConvTranspose)
    return any(isinstance(getattr(node, "type", None), type) and issubclass(node.type, kinds)
               for graphdef in built.topology.graphdefs.values() for node in getattr(graphdef, "nodes", ()))


def build_topology(config: TrainConfig, input_shape, num_classes: int) -> Built:
    """The configured topology of `config` for data of the given shape."""
    check_logits(config.model, input_shape, num_classes, config.widths)  # a registered model must end in logits
    setup = Setup(
        model=config.model, widths=tuple(config.widths), input_shape=tuple(input_shape), num_classes=num_classes,
        cuts=config.resolved_cuts(num_classes), clients=config.clients, merge=config.merge, slicing=config.slicing,
        tasks=tuple(config.tasks), task_weights=tuple(config.task_weights), handoff=config.handoff,
        nopeek_hops=config.nopeek_hops, cut_activation=config.cut_activation,
    )
    return build(config.topology, setup)


@dataclasses.dataclass
class StackState:
    """Parameters `{party: {segment: State}}` and optimiser states `{party: ...}` of K models,
    each leaf with a leading axis K."""

    params: Any
    opt: Any


jax.tree_util.register_dataclass(StackState, data_fields=["params", "opt"], meta_fields=[])


def init_stack(built: Built, seeds: Sequence[int], optimizer, mode: str = "vmap") -> StackState:
    """K models (one per seed), stacked as `mode` keeps them (see `nopeek.stacking`); one
    optimiser state per party and model."""
    params = [built.init(int(s)) for s in seeds]
    opt = [{party: optimizer.init(p) for party, p in model.items()} for model in params]
    return StackState(stack_models(params, mode), stack_models(opt, mode))


_FROM_CONFIG = "from-config"


def make_step_fn(built: Built, optimizer, config: TrainConfig, stack_mode: str, *, leakage_kind=_FROM_CONFIG,
                 noise: bool = True, warmup_steps: int = 0, label_kinds=()):
    """A jitted `step(state, hparams, x_train, y_train, idx, step) -> (state, (loss, ce, leak))`.

    idx: (K, batch) sample indices, one row per model. One optimisation step of all K
    models; the state's buffers are donated. `leakage_kind` defaults to `config.leakage`;
    None builds a plain split-learning step that never computes dCor. `noise=False`
    leaves the noise defence out of the program (every noise scale of the stack is 0).
    With `warmup_steps`, alpha ramps linearly from 0 to its value over that many steps.
    `label_kinds`: the label defences (`nopeek.label_defences`) some model of the stack
    uses, per model `hparams["label_defense"]` at `hparams["label_strength"]`; () leaves
    them out of the program.
    """
    if leakage_kind == _FROM_CONFIG:
        leakage_kind = config.leakage
    topo = built.topology

    def model_step(params, opt, hp, x, y, step):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(hp["seed"]), _TRAIN_NOISE), step) if noise else None
        ramp = jnp.minimum(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        transform = None
        if label_kinds:  # the label holder's defence (nopeek.label_defences)
            from nopeek.label_defences import label_transform

            label_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(hp["seed"]), _LABEL_NOISE), step)
            transform = label_transform(hp["label_defense"], hp["label_strength"], label_key, kinds=label_kinds)
        grads, aux = protocol_gradients(
            topo, params, built.prepare(x, y), alpha=hp["alpha"] * ramp, task_weight=config.task_weight,
            leakage_kind=leakage_kind, noise_scale=hp["noise_scale"], noise_kind=config.noise_kind, key=key,
            gradient_transform=transform,
        )
        new_params, new_opt = {}, {}
        for party in params:  # each party updates its own parameters with its own optimiser state
            updates, new_opt[party] = optimizer.update(grads[party], opt[party], params[party])
            new_params[party] = optax.apply_updates(params[party], updates)
        leaks = [jnp.mean(v) for v in aux["leak"].values()]
        leak = jnp.mean(jnp.stack(leaks)) if leaks else jnp.zeros(())
        first_task = next(iter(built.tasks))
        return (new_params, new_opt), (aux["loss"], aux["ce"][first_task], leak)

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


def make_eval_fn(built: Built, config: TrainConfig, stack_mode: str, messages: Sequence[str]):
    """A jitted `evaluate(params, hparams, x, y, sample_index) -> (messages, logits)`.

    messages: {name: (K, n, ...)} as sent (test-time noise per sample included);
    logits: {label key: (K, n, classes)}.
    """
    topo = built.topology

    def one(params, hp, x, y, sample_index):
        key = jax.random.fold_in(jax.random.key(hp["seed"]), _TEST_NOISE)
        values = forward(topo, params, built.prepare(x, y), noise_scale=hp["noise_scale"],
                         noise_kind=config.noise_kind, key=key, sample_index=sample_index)
        return {m: values[m] for m in messages}, {loss.labels: values[loss.logits] for loss in topo.losses}

    return jax.jit(over_stack(one, stack_mode, (0, 0, None, None, None)))


def evaluate(eval_fn, params, hparams, x, y, chunk: int = 1024, *, keep_messages: bool = True):
    """Per-task accuracy {labels: (K,)} and messages {name: (K, n, ...)} for all of x, in chunks
    (messages empty when `keep_messages` is False)."""
    sent, correct = {}, {}
    for start in range(0, len(x), chunk):
        xb, yb = jnp.asarray(x[start : start + chunk]), jnp.asarray(y[start : start + chunk])
        index = jnp.arange(start, start + len(xb))
        msgs, logits = eval_fn(params, hparams, xb, yb, index)
        for m, v in msgs.items() if keep_messages else ():
            sent.setdefault(m, []).append(np.asarray(v))
        for key, lg in logits.items():
            labels = _task_targets(key, yb)
            correct[key] = correct.get(key, 0) + np.asarray(jnp.sum(jnp.argmax(lg, -1) == labels[None], axis=-1))
    accuracy = {k: v / len(x) for k, v in correct.items()}
    return accuracy, {m: np.concatenate(v, axis=1) for m, v in sent.items()}


def _task_targets(key: str, y):
    from nopeek.topologies import TASKS, task_labels

    task = {v: k for k, v in TASKS.items()}.get(key, "digit")
    return task_labels(y, task, 0)


@dataclasses.dataclass(frozen=True)
class LeakEntry:
    """One (party, message) whose leakage is measured: dCor of the party's (or, for a relay,
    the upstream holder's) raw inputs with what it sends.

    replica: which replica of a replicated sender; subset: held-out sample indices
    (round robin: each client's shard of the test set), None for all.
    """

    party: str
    message: str
    source: str
    replica: int | None = None
    subset: Any = None
    merged: bool = False  # vertical: the server's view, every client's message together

    @property
    def label(self) -> str:
        """The message's name in tables: the tensor, or "z[all]" for the merged view."""
        return f"{self.message}[all]" if self.merged else self.message

    def view(self, value, models_axis: bool = False):
        """The entry's tensor from the message's value (N, n, ...) for a replicated sender
        (with a leading models axis K when `models_axis`): one replica's share, or for the
        merged view all replicas side by side, (n, N * d)."""
        off = 1 if models_axis else 0
        if self.merged:
            v = jnp.moveaxis(jnp.asarray(value), off, off + 1)
            return v.reshape(*v.shape[: off + 1], -1)
        if self.replica is not None:
            return value[:, self.replica] if models_axis else value[self.replica]
        return value

    def source_view(self, value, models_axis: bool = False):
        """The raw inputs the entry is compared with: all of x, or the sender's slice."""
        if self.replica is not None:
            return value[:, self.replica] if models_axis else value[self.replica]
        return value


def leak_entries(built: Built, shards_test=None) -> list[LeakEntry]:
    """Every forward message computed from raw inputs that reaches a party not holding them."""
    topo = built.topology
    out, seen = [], set()
    for sender, receiver, tensor in topo.messages():
        sources = topo.upstream_inputs(tensor)
        if not sources or (sender, tensor) in seen:
            continue
        if all(s in topo.party(receiver).holds for s in sources):
            continue  # back to the party that holds the inputs (u_shaped's z2)
        seen.add((sender, tensor))
        source = sorted(sources)[0]
        party = topo.party(sender)
        if party.replicas > 1:
            out += [LeakEntry(name, tensor, source, replica=i) for i, name in enumerate(party.member_names())]
            # What the receiver can rebuild of client i's slice from everything it received.
            out += [LeakEntry(name, tensor, source, replica=i, merged=True) for i, name in enumerate(party.member_names())]
        elif shards_test is not None and len(shards_test) > 1:
            out += [LeakEntry(f"{sender}{i + 1}", tensor, source, subset=np.asarray(s)) for i, s in enumerate(shards_test)]
        else:
            out.append(LeakEntry(sender, tensor, source))
    return out


@jax.jit
def _probe_dcor(x, zs):
    """Plain dCor of a small held-out batch x with each of K message sets zs -> (K,)."""
    return jax.vmap(lambda z: metrics.distance_correlation(x, z))(zs)


@jax.jit
def _stack_dcor(x, zs):
    """dCor of x with each of K message sets zs: (K, n, ...) -> (K,), blocked."""
    return jax.lax.map(lambda z: metrics.distance_correlation(x, z, block_size=DCOR_BLOCK), zs)


def measure_leakage(entries, data_test: dict, sent: dict) -> dict:
    """{(party, message label): (K,) dCor} over all held-out samples (or the entry's subset)."""
    out = {}
    for e in entries:
        x = e.source_view(np.asarray(data_test[e.source]))
        z = e.view(sent[e.message], models_axis=True)
        if e.subset is not None:
            x, z = x[e.subset], z[:, e.subset]
        out[(e.party, e.label)] = np.asarray(_stack_dcor(jnp.asarray(x), jnp.asarray(z)))
    return out


@jax.jit
def _all_finite(params):
    """(K,) whether every parameter of each model is finite."""
    if isinstance(params, ModelList):
        return jnp.stack([jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(m)])) for m in params])
    leaves = jax.tree.leaves(params)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1) for a in leaves]), axis=0)


@dataclasses.dataclass
class StackResult:
    """What `train_stack` returns. Arrays over models have a leading axis K."""

    config: TrainConfig
    built: Built
    state: StackState
    hparams: dict[str, np.ndarray]  # "alpha", "noise_scale", "seed": (K,)
    history: list[dict[str, list[float]]]  # per epoch: name -> K values
    task_accuracy: dict[str, np.ndarray]  # label key -> (K,)
    leakage: dict[tuple[str, str], np.ndarray]  # (party, message) -> (K,) held-out dCor
    diverged_epoch: np.ndarray  # (K,) first epoch whose loss or parameters were not finite; 0 = never
    diverged_loss: np.ndarray  # (K,) the training loss of that epoch (NaN/Inf), NaN if never
    seconds: float
    messages_test: dict[str, np.ndarray]  # name -> (K, n_test, ...) as sent
    eval_fn: Any  # the jitted evaluate(params, hparams, x, y, sample_index)
    shards: list  # training-set shards (round robin), one for other topologies

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


def _broadcast_lists(config: TrainConfig, alphas, seeds, noise_scales, label_defenses=None,
                     label_strengths=None) -> dict[str, list]:
    lists = {
        "alpha": list(alphas) if alphas is not None else [config.alpha],
        "seed": list(seeds) if seeds is not None else [config.seed],
        "noise_scale": list(noise_scales) if noise_scales is not None else [config.noise_scale],
        "label_defense": list(label_defenses) if label_defenses is not None else [config.label_defense],
        "label_strength": list(label_strengths) if label_strengths is not None else [config.label_strength],
    }
    k = max(len(v) for v in lists.values())
    for name, values in lists.items():
        if len(values) not in (1, k):
            raise ValueError(f"{name}: {len(values)} values for a stack of {k} models")
        lists[name] = values * k if len(values) == 1 else values
    for name in ("alpha", "noise_scale", "label_strength"):
        bad = [v for v in lists[name] if not (np.isfinite(v) and v >= 0)]
        if bad:
            raise ConfigError(f"{name}s must be finite and >= 0, got {bad[0]}")
    return lists


def _finite_mean(values) -> float:
    """Mean of the finite values; NaN (without numpy's all-NaN warning on stderr) when there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _label_hparams(hparams: dict, lists: dict, num_classes: int, topology: str) -> tuple[str, ...]:
    """Add the label defences' per-model code and strength to `hparams`; return the defences used."""
    from nopeek.label_defences import CODES, check_label_defense

    for defense, strength in zip(lists["label_defense"], lists["label_strength"]):
        check_label_defense(defense, strength, num_classes)
    if topology == "multi_task" and any(d != "none" for d in lists["label_defense"]):
        raise ConfigError("--label-defense: multi_task sends the labels to every server; a label defence does not apply")
    hparams["label_defense"] = jnp.asarray([CODES[d] for d in lists["label_defense"]], jnp.int32)
    hparams["label_strength"] = jnp.asarray(lists["label_strength"], jnp.float32)
    return tuple(sorted({d for d in lists["label_defense"] if d != "none"}))


def data_shards(config: TrainConfig, dataset: Dataset) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(training shards, test shards or None): each client's sample indices (round robin), or
    one shard of the whole training set.

    Raises:
      ConfigError: the partition cannot be made, or no client has a whole batch.
    """
    shards, shards_test = [np.arange(len(dataset.x_train))], None
    if config.topology == "round_robin":
        shards = partition(dataset.y_train, config.clients, config.partition, config.dirichlet_alpha, config.split_seed)
        shards_test = partition(dataset.y_test, config.clients, config.partition, config.dirichlet_alpha, config.split_seed + 1)
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
    stack_mode: str = "auto",
    progress: bool = True,
    desc: str = "train",
    label_defenses: Sequence[str] | None = None,
    label_strengths: Sequence[float] | None = None,
) -> StackResult:
    """Train K split models together; K = the common length of alphas/seeds/noise_scales.

    Args:
      config: topology, architecture, cuts, optimiser, epochs, batch size; the defaults
        for missing lists (`config.alpha`, `config.seed`, `config.noise_scale`).
      dataset: the data (its train/test split is the dataset's).
      alphas, seeds, noise_scales: per-model values (a length-1 list is broadcast).
      label_defenses, label_strengths: per-model label defence and strength
        (`nopeek.label_defences`; default `config.label_defense`, `config.label_strength`).

    Returns:
      StackResult with per-task test accuracy, held-out dCor of every message, the history,
      and which models diverged.
    """
    config.validate()
    lists = _broadcast_lists(config, alphas, seeds, noise_scales, label_defenses, label_strengths)
    k = len(lists["alpha"])
    hparams = {
        "alpha": jnp.asarray(lists["alpha"], jnp.float32),
        "noise_scale": jnp.asarray(lists["noise_scale"], jnp.float32),
        "seed": jnp.asarray(lists["seed"], jnp.int32),
    }
    built = build_topology(config, dataset.input_shape, dataset.num_classes)
    shards, shards_test = data_shards(config, dataset)
    mode = resolve_stack_mode(stack_mode, has_conv(built))
    if mode == "vmap" and padded_size(k) > k:  # as many models on every device; the padding is dropped
        lists = {name: values + [values[-1]] * (padded_size(k) - k) for name, values in lists.items()}
        hparams = {name: jnp.asarray(lists[name], hparams[name].dtype) for name in hparams}
    label_kinds = _label_hparams(hparams, lists, dataset.num_classes, config.topology)
    optimizer = make_optimizer(config.optimizer, config.lr)
    state = init_stack(built, lists["seed"], optimizer, mode)
    if mode == "vmap":
        state, hparams = shard_models(state), shard_models(hparams)
    step_fn = make_step_fn(built, optimizer, config, mode, noise=any(s > 0 for s in lists["noise_scale"]),
                           warmup_steps=int(round(config.alpha_warmup * sum(len(s) // config.batch_size for s in shards))),
                           label_kinds=label_kinds)
    entries = leak_entries(built, shards_test)
    eval_fn = make_eval_fn(built, config, mode, sorted({e.message for e in entries}))
    data_test = built.prepare(jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test))

    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    n_probe = min(config.dcor_batch, len(dataset.x_test))
    first = entries[0]
    probe_x = jnp.asarray(first.source_view(np.asarray(data_test[first.source]))[:n_probe])
    k_run = len(lists["seed"])
    diverged_epoch = np.zeros(k_run, np.int64)
    diverged_loss = np.full(k_run, np.nan)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, unit="epoch", leave=False)
    for epoch in bar:
        orders = np.stack([batch_order(int(s), epoch, shards, config.batch_size) for s in lists["seed"]], axis=1)
        totals = None
        for i, idx in enumerate(orders):
            state, stats = step_fn(state, hparams, x_train, y_train, jnp.asarray(idx), epoch * len(orders) + i)
            totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
        loss, ce, leak = (np.asarray(t) / len(orders) for t in totals)
        finite = np.isfinite(loss) & np.asarray(_all_finite(state.params))
        newly = (~finite) & (diverged_epoch == 0)
        diverged_epoch[newly] = epoch + 1
        diverged_loss[newly] = loss[newly]
        accuracy, _ = evaluate(eval_fn, state.params, hparams, dataset.x_test, dataset.y_test, keep_messages=False)
        probe_msgs, _ = eval_fn(state.params, hparams, jnp.asarray(dataset.x_test[:n_probe]),
                                jnp.asarray(dataset.y_test[:n_probe]), jnp.arange(n_probe))
        z = first.view(probe_msgs[first.message], models_axis=True)
        probe_dcor = np.asarray(_probe_dcor(probe_x, z))
        row = {"train_loss": loss.tolist(), "train_ce": ce.tolist(), "train_dcor_batch": leak.tolist(),
               "epoch": epoch + 1, "heldout_dcor": probe_dcor.tolist(),
               "test_accuracy": accuracy[next(iter(built.tasks))].tolist()}
        history.append(row)
        bar.set_postfix(acc=f"{_finite_mean(row['test_accuracy']):.3f}", dcor=f"{_finite_mean(probe_dcor):.3f}")
        if np.all(diverged_epoch > 0):
            break  # every model of the stack diverged: nothing left to train
    task_accuracy, sent = evaluate(eval_fn, state.params, hparams, dataset.x_test, dataset.y_test)
    leakage = measure_leakage(entries, {k_: np.asarray(v) for k_, v in data_test.items()}, sent)
    if k_run > k:  # drop the models that only padded the stack to the device count
        keep = lambda a: a[:k]  # noqa: E731
        state = StackState(jax.tree.map(keep, state.params), jax.tree.map(keep, state.opt))
        hparams = {name: keep(v) for name, v in hparams.items()}
        history = [{name: (v[:k] if isinstance(v, list) else v) for name, v in row.items()} for row in history]
        task_accuracy = {name: keep(v) for name, v in task_accuracy.items()}
        leakage = {name: keep(v) for name, v in leakage.items()}
        sent = {name: keep(v) for name, v in sent.items()}
        diverged_epoch, diverged_loss = keep(diverged_epoch), keep(diverged_loss)
    return StackResult(
        config=config, built=built, state=state, hparams={k_: np.asarray(v) for k_, v in hparams.items()},
        history=history, task_accuracy=task_accuracy, leakage=leakage, diverged_epoch=diverged_epoch,
        diverged_loss=diverged_loss, seconds=time.perf_counter() - t0, messages_test=sent, eval_fn=eval_fn,
        shards=shards,
    )
