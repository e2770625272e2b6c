"""NoPeek training of a stack of K split models in one compiled program.

The K models share architecture, cut and data order and differ in `alpha`, seed and
noise scale. An epoch is one jitted `lax.scan` over batches; inside each step the K
models run the split protocol (`nopeek.split.protocol_gradients`) side by side, as a
`jax.vmap` or as straight-line code unrolled in the one program (`stack_mode="map"`);
"auto" chooses by the measurements in bench/train.py. No Python loop runs over models
at run time, and steps are driven from Python rather than by `lax.scan`, because XLA:CPU
runs convolutions inside loops about 13x slower.

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
from attacks._stack import over_stack, stack_trees
from attacks._stack import resolve_stack_mode as _resolve
from nopeek.config import ConfigError, TrainConfig
from nopeek.data import Dataset
from nopeek.models import build_model
from nopeek.split import SplitFns, add_noise, protocol_gradients, split

DCOR_BLOCK = 1024  # rows per block for held-out dCor over a whole test set
_TRAIN_NOISE, _TEST_NOISE = 0, 1  # separate key streams per model seed


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(lr)
    if name == "sgd":
        return optax.sgd(lr, momentum=0.9)
    raise ConfigError(f"unknown optimizer {name!r}")


def resolve_stack_mode(mode: str, model: str = "mlp") -> str:
    """'auto' follows bench/train.py: on the CPU, vmap for dense-only models (1.8x over
    sequential) but an unrolled map for convnets (vmapped convolutions ran 3x slower than
    sequential); vmap on accelerators."""
    return _resolve(mode, has_conv=model != "mlp")


@dataclasses.dataclass
class StackState:
    """Parameters and optimiser states of K models, each leaf with a leading axis K."""

    client: Any
    server: Any
    client_opt: Any
    server_opt: Any


jax.tree_util.register_dataclass(
    StackState, data_fields=["client", "server", "client_opt", "server_opt"], meta_fields=[]
)


@dataclasses.dataclass
class StackResult:
    """What `train_stack` returns. Arrays over models have a leading axis K."""

    config: TrainConfig
    fns: SplitFns
    state: StackState
    hparams: dict[str, np.ndarray]  # "alpha", "noise_scale", "seed": (K,)
    history: list[dict[str, list[float]]]  # per epoch: name -> K values
    test_accuracy: np.ndarray  # (K,)
    dcor: np.ndarray  # (K,) dCor of all held-out inputs and what crosses the cut
    seconds: float
    z_test: np.ndarray  # (K, n_test, ...) what crossed the cut for the held-out inputs
    forward: Any  # the jitted forward(client, server, hparams, x) used for evaluation

    def model_params(self, k: int):
        """(client_params, server_params) of model k, without the stack axis."""
        take = lambda t: jax.tree.map(lambda a: a[k], t)  # noqa: E731
        return take(self.state.client), take(self.state.server)


def init_stack(config: TrainConfig, dataset: Dataset, seeds: Sequence[int], optimizer):
    """Build K models (one per seed), split them at the cut and stack their parameters."""
    cut = config.resolved_cut()
    clients, servers = [], []
    fns = None
    for seed in seeds:
        model = build_model(config.model, dataset.input_shape, dataset.num_classes, config.widths, seed=int(seed))
        fns, c, s = split(model, cut)
        clients.append(c)
        servers.append(s)
    client, server = stack_trees(clients), stack_trees(servers)
    client_opt = jax.vmap(optimizer.init)(client)
    server_opt = jax.vmap(optimizer.init)(server)
    return fns, StackState(client, server, client_opt, server_opt)


_FROM_CONFIG = "from-config"


def make_step_fn(fns: SplitFns, optimizer, config: TrainConfig, stack_mode: str, leakage_kind=_FROM_CONFIG):
    """A jitted `step(state, hparams, x_train, y_train, idx, step) -> (state, (loss, ce, leak))`.

    `leakage_kind` defaults to `config.leakage`; None builds a plain split-learning step
    that never computes dCor (the baseline of the overhead benchmark).

    One optimisation step of all K models on the batch `x_train[idx]`. The state's
    buffers are donated (updated in place). Steps are driven from Python, not by a
    `lax.scan`: XLA:CPU runs convolutions inside loops an order of magnitude slower.
    """
    if leakage_kind == _FROM_CONFIG:
        leakage_kind = config.leakage

    def model_step(client, server, client_opt, server_opt, hp, x, y, step):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(hp["seed"]), _TRAIN_NOISE), step)
        g_client, g_server, aux = protocol_gradients(
            fns, client, server, x, y,
            alpha=hp["alpha"], task_weight=config.task_weight, leakage_kind=leakage_kind,
            noise_scale=hp["noise_scale"], noise_kind=config.noise_kind, key=key,
        )
        # Each party updates its own parameters with its own optimiser state.
        upd, client_opt = optimizer.update(g_client, client_opt, client)
        client = optax.apply_updates(client, upd)
        upd, server_opt = optimizer.update(g_server, server_opt, server)
        server = optax.apply_updates(server, upd)
        return (client, server, client_opt, server_opt), (aux["loss"], aux["ce"], aux["leak"])

    stacked_step = over_stack(model_step, stack_mode, (0, 0, 0, 0, 0, None, None, None))

    @partial(jax.jit, donate_argnums=0)
    def step(state: StackState, hparams, x_train, y_train, idx, step_index):
        (c, s, co, so), stats = stacked_step(
            state.client, state.server, state.client_opt, state.server_opt, hparams,
            x_train[idx], y_train[idx], step_index,
        )
        return StackState(c, s, co, so), stats

    return step


def epoch_order(seed: int, epoch: int, n: int, batch: int) -> np.ndarray:
    """(steps, batch) sample indices of one epoch: a seeded permutation, last partial batch dropped."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // batch
    return perm[: steps * batch].reshape(steps, batch)


def run_epoch(step_fn, state, hparams, x_train, y_train, order, epoch: int):
    """Run the steps of one epoch; returns (state, per-model means of loss, ce, batch dCor)."""
    totals = None
    for i, idx in enumerate(order):
        state, stats = step_fn(state, hparams, x_train, y_train, jnp.asarray(idx), epoch * len(order) + i)
        totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
    loss, ce, leak = (np.asarray(t) / len(order) for t in totals)
    return state, {"train_loss": loss, "train_ce": ce, "train_dcor_batch": leak}


def make_forward_fn(fns: SplitFns, config: TrainConfig, stack_mode: str):
    """A jitted `forward(client, server, hparams, x) -> (z_sent (K, n, ...), logits (K, n, C))`.

    Test-time noise (the noise baseline) is drawn from a key of its own per model.
    """

    def one(client, server, hp, x):
        z = fns.client_apply(client, x)
        key = jax.random.fold_in(jax.random.key(hp["seed"]), _TEST_NOISE)
        z = add_noise(z, key, hp["noise_scale"], config.noise_kind)
        return z, fns.server_apply(server, z)

    return jax.jit(over_stack(one, stack_mode, (0, 0, 0, None)))


@jax.jit
def _probe_dcor(x, zs):
    """Plain dCor of a small held-out batch x with each of K activation sets zs -> (K,)."""
    return jax.vmap(lambda z: metrics.distance_correlation(x, z))(zs)


@jax.jit
def _stack_dcor(x, zs):
    """dCor of x with each of K activation sets zs: (K, n, ...) -> (K,), blocked."""
    return jax.lax.map(lambda z: metrics.distance_correlation(x, z, block_size=DCOR_BLOCK), zs)


def evaluate(forward, state: StackState, hparams, x, y, chunk: int = 1024):
    """Test accuracy (K,) and the activations (K, n, ...) that cross the cut, in chunks."""
    zs, correct = [], 0
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk]
        z, logits = forward(state.client, state.server, hparams, xb)
        zs.append(np.asarray(z))
        correct = correct + np.asarray(jnp.sum(jnp.argmax(logits, -1) == y[None, start : start + chunk], axis=-1))
    return correct / len(x), np.concatenate(zs, axis=1)


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
) -> StackResult:
    """Train K split models together; K = the common length of alphas/seeds/noise_scales.

    Args:
      config: architecture, cut, optimiser, epochs, batch size; `config.seed` fixes the
        data order shared by the stack; `config.alpha`, `config.noise_scale` are the
        defaults for missing lists.
      dataset: the data; every model sees the same batches.
      alphas, seeds, noise_scales: per-model values (a length-1 list is broadcast).

    Returns:
      StackResult with final test accuracy and held-out dCor per model, and the history.
    """
    config.validate()
    lists = {
        "alpha": list(alphas) if alphas is not None else [config.alpha],
        "seed": list(seeds) if seeds is not None else [config.seed],
        "noise_scale": list(noise_scales) if noise_scales is not None else [config.noise_scale],
    }
    k = max(len(v) for v in lists.values())
    for name, values in lists.items():
        if len(values) not in (1, k):
            raise ValueError(f"{name}: {len(values)} values for a stack of {k} models")
        lists[name] = values * k if len(values) == 1 else values
    if any(a < 0 for a in lists["alpha"]) or any(s < 0 for s in lists["noise_scale"]):
        raise ConfigError("alphas and noise scales must be >= 0")
    hparams = {
        "alpha": jnp.asarray(lists["alpha"], jnp.float32),
        "noise_scale": jnp.asarray(lists["noise_scale"], jnp.float32),
        "seed": jnp.asarray(lists["seed"], jnp.int32),
    }
    n_train = len(dataset.x_train)
    if config.batch_size > n_train:
        raise ConfigError(f"--batch-size {config.batch_size} exceeds the {n_train} training samples")
    steps = n_train // config.batch_size
    mode = resolve_stack_mode(stack_mode, config.model)
    optimizer = make_optimizer(config.optimizer, config.lr)
    fns, state = init_stack(config, dataset, lists["seed"], optimizer)
    step_fn = make_step_fn(fns, optimizer, config, mode)
    forward = make_forward_fn(fns, config, mode)

    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    n_probe = min(config.dcor_batch, len(dataset.x_test))
    x_probe = jnp.asarray(dataset.x_test[:n_probe])
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, unit="epoch", leave=False)
    for epoch in bar:
        order = epoch_order(config.seed, epoch, n_train, config.batch_size)
        state, stats = run_epoch(step_fn, state, hparams, x_train, y_train, order, epoch)
        acc, _ = evaluate(forward, state, hparams, dataset.x_test, dataset.y_test)
        z_probe, _ = forward(state.client, state.server, hparams, x_probe)
        probe_dcor = _probe_dcor(x_probe, z_probe)
        row = {name: np.asarray(v).tolist() for name, v in stats.items()}
        row.update(epoch=epoch + 1, test_accuracy=acc.tolist(), heldout_dcor=np.asarray(probe_dcor).tolist())
        history.append(row)
        bar.set_postfix(acc=f"{acc.mean():.3f}", dcor=f"{float(np.mean(probe_dcor)):.3f}")
    acc, z_test = evaluate(forward, state, hparams, dataset.x_test, dataset.y_test)
    dcor = np.asarray(_stack_dcor(jnp.asarray(dataset.x_test), jnp.asarray(z_test)))
    return StackResult(
        config=config,
        fns=fns,
        state=state,
        hparams={k: np.asarray(v) for k, v in hparams.items()},
        history=history,
        test_accuracy=np.asarray(acc),
        dcor=dcor,
        seconds=time.perf_counter() - t0,
        z_test=z_test,
        forward=forward,
    )
