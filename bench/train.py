"""Training benchmarks: the engine's runner against a hand-written two-party step, NoPeek's
overhead per step, and K stacked models against K sequential runs.

Run:  python bench/train.py [--part runner|overhead|stack|all] [--steps 20]

Every figure is a ratio of two timings taken in the same run:
- runner: the vanilla NoPeek step on the party-graph runner (`nopeek.engine`) over the
  same step written by hand for exactly two parties (client VJP, server value_and_grad,
  client backward with alpha * dD/dz, one Adam update per party), same model and batch;
- overhead: a NoPeek split step (dCor term and its gradient at the cut) over a plain split
  step that never computes dCor, at batch 64, 256, 1024, for mlp (digits-sized input)
  and cnn (MNIST-sized input);
- stack: throughput of K = 8 models trained by one compiled step (`map`: unrolled in the
  program; `vmap`: batched) over the same 8 models stepped one after another;
- torch: the NoPeek split step of the default `cnn` on 28x28 inputs (cut 4, alpha 1) against
  a plain vectorised PyTorch step of the same network and loss (dCor from `torch.cdist`),
  at batch 64 and 256, when PyTorch is installed (`pip install -e ".[bench]"`);
- clients: a vertical split's step with N = 2, 4, 8 clients run as one replicated party
  (one vmapped client program) against the same N clients as separate parties (N client
  programs in the step), same parameters and data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import optax  # noqa: E402

from bench._host import host_line  # noqa: E402
from flax import nnx  # noqa: E402

from nopeek.training import TrainConfig  # noqa: E402
from nopeek.data import Dataset  # noqa: E402
from nopeek.protocol import cross_entropy, leakage  # noqa: E402
from nopeek.training import build_topology, init_stack, make_optimizer, make_step_fn, stack_hparams  # noqa: E402

SHAPES = {"mlp": (8, 8, 1), "cnn": (28, 28, 1)}


def _fake_dataset(shape, n):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int32)
    return Dataset("bench", x, y, x[:64], y[:64], 10)


def _time_steps(step, state, hp, x, y, batch, steps):
    """Seconds per step (median of 3 rounds of `steps` steps), after a warm-up step."""
    n, k = x.shape[0], hp["seed"].shape[0]
    idx = [jnp.asarray(np.stack([np.random.default_rng([i, m]).choice(n, batch, replace=False) for m in range(k)]))
           for i in range(steps)]
    state, _ = step(state, hp, x, y, idx[0], 0)
    jax.block_until_ready(state)
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(steps):
            state, _ = step(state, hp, x, y, idx[i], i)
        jax.block_until_ready(state)
        rounds.append((time.perf_counter() - t0) / steps)
    return float(np.median(rounds)), state


def _setup(model, batch, k, mode, leakage):
    ds = _fake_dataset(SHAPES[model], max(2048, batch))
    cfg = TrainConfig(dataset="digits", model=model, batch_size=batch, leakage=leakage or "dcor")
    opt = make_optimizer("adam", 1e-3)
    built = build_topology(cfg, ds.input_shape, ds.num_classes)
    state = init_stack(built, list(range(k)), opt, mode)
    # NoPeek (alpha 1) in the program, or no defence at all: the plain split step
    hp = stack_hparams([{"nopeek": 1.0} if leakage else {} for _ in range(k)], list(range(k)))
    step = make_step_fn(built, opt, cfg, mode)
    return step, state, hp, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), built


def hand_written_step(built, opt, alpha=1.0):
    """The vanilla NoPeek step written for exactly two parties, without the engine."""
    client_graph = built.topology.graphdefs[("client", "bottom")]
    server_graph = built.topology.graphdefs[("server", "top")]

    def step(params, opt_state, x_train, y_train, idx):
        x, y = x_train[idx], y_train[idx]
        client, server = params["client"]["bottom"], params["server"]["top"]
        z, client_vjp = jax.vjp(lambda p: nnx.merge(client_graph, p)(x), client)
        ce, (g_server, g_z) = jax.value_and_grad(
            lambda p, zz: cross_entropy(nnx.merge(server_graph, p)(zz), y), argnums=(0, 1))(server, z)
        g_leak = jax.grad(lambda zz: leakage(x, zz, "dcor"))(z)
        (g_client,) = client_vjp(g_z + alpha * g_leak)
        grads = {"client": {"bottom": g_client}, "server": {"top": g_server}}
        new_params, new_opt = {}, {}
        for party in params:
            updates, new_opt[party] = opt.update(grads[party], opt_state[party], params[party])
            new_params[party] = optax.apply_updates(params[party], updates)
        return new_params, new_opt, ce

    return jax.jit(step, donate_argnums=(0, 1))


def runner(steps):
    print("\n## The party-graph runner against a hand-written two-party step (vanilla NoPeek, K = 1)")
    print("| model | batch | hand-written (ms/step) | runner (ms/step) | ratio |")
    print("|---|---|---|---|---|")
    for model, batch in (("mlp", 64), ("mlp", 256), ("cnn", 64), ("cnn", 256)):
        step, state, hp, x, y, built = _setup(model, batch, 1, "map", "dcor")
        t_runner, _ = _time_steps(step, state, hp, x, y, batch, steps)
        opt = make_optimizer("adam", 1e-3)
        params = built.init(0)
        opt_state = {p: opt.init(v) for p, v in params.items()}
        hand = hand_written_step(built, opt)
        idx = [jnp.asarray(np.random.default_rng([i, 0]).choice(x.shape[0], batch, replace=False)) for i in range(steps)]
        params, opt_state, _ = hand(params, opt_state, x, y, idx[0])
        jax.block_until_ready(params)
        rounds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(steps):
                params, opt_state, _ = hand(params, opt_state, x, y, idx[i])
            jax.block_until_ready(params)
            rounds.append((time.perf_counter() - t0) / steps)
        t_hand = float(np.median(rounds))
        print(f"| {model} | {batch} | {t_hand * 1e3:.2f} | {t_runner * 1e3:.2f} | {t_runner / t_hand:.2f}x |", flush=True)


def overhead(steps):
    print("\n## NoPeek step over plain split step (K = 1)")
    print("| model | batch | plain (ms/step) | NoPeek (ms/step) | overhead |")
    print("|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        for batch in (64, 256, 1024):
            t = {}
            for term in (None, "dcor"):
                step, state, hp, x, y, _ = _setup(model, batch, 1, "map", term)
                t[term], _ = _time_steps(step, state, hp, x, y, batch, steps)
            print(f"| {model} | {batch} | {t[None] * 1e3:.2f} | {t['dcor'] * 1e3:.2f} | {t['dcor'] / t[None]:.2f}x |", flush=True)


def stack(steps, k=8, batch=64):
    print(f"\n## K = {k} stacked models vs {k} sequential runs (NoPeek step, batch {batch})")
    print("| model | sequential (ms per step of all K) | map (ms) | vmap (ms) | map speed-up | vmap speed-up |")
    print("|---|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        step1, state1, hp1, x, y, _ = _setup(model, batch, 1, "map", "dcor")
        t_one, _ = _time_steps(step1, state1, hp1, x, y, batch, steps)
        sequential = k * t_one  # the K models share one compiled step; run one after another
        t = {}
        for mode in ("map", "vmap"):
            step, state, hp, x, y, _ = _setup(model, batch, k, mode, "dcor")
            t[mode], _ = _time_steps(step, state, hp, x, y, batch, steps)
        print(
            f"| {model} | {sequential * 1e3:.1f} | {t['map'] * 1e3:.1f} | {t['vmap'] * 1e3:.1f} "
            f"| {sequential / t['map']:.2f}x | {sequential / t['vmap']:.2f}x |",
            flush=True,
        )


def _vertical_step(model, n, stack, batch, replica_mode="auto"):
    shape = SHAPES[model] if model == "cnn" else (64,)
    ds = _fake_dataset(shape, 1024)
    cfg = TrainConfig(dataset="digits", model=model, batch_size=batch, topology="vertical", clients=n,
                      cuts=(4,) if model == "cnn" else (1,), widths=(8, 16, 64, 32) if model == "cnn" else (128, 64))
    from nopeek.protocol import Setup, build

    setup = Setup(model=model, widths=tuple(cfg.widths), input_shape=ds.input_shape, num_classes=10,
                  cuts=tuple(cfg.cuts), clients=n, stack_clients=stack, replica_mode=replica_mode)
    built = build("vertical", setup)
    opt = make_optimizer("adam", 1e-3)
    state = init_stack(built, [0], opt, "map")
    hp = stack_hparams([{"nopeek": 1.0}], [0])
    step = make_step_fn(built, opt, cfg, "map")
    return step, state, hp, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)


def clients(steps, batch=64):
    print(f"\n## Vertical split: N clients as one vmapped party against N separate parties (NoPeek step, batch {batch})")
    print("| model | N | separate parties (ms/step) | replicated, vmap (ms/step) | replicated, unrolled (ms/step) "
          "| vmap speed-up | unrolled speed-up |")
    print("|---|---|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        for n in (2, 4, 8):
            t = {}
            for key, stack, mode in (("separate", False, "auto"), ("vmap", True, "vmap"), ("map", True, "map")):
                step, state, hp, x, y = _vertical_step(model, n, stack, batch, mode)
                t[key], _ = _time_steps(step, state, hp, x, y, batch, steps)
            print(f"| {model} | {n} | {t['separate'] * 1e3:.2f} | {t['vmap'] * 1e3:.2f} | {t['map'] * 1e3:.2f} "
                  f"| {t['separate'] / t['vmap']:.2f}x | {t['separate'] / t['map']:.2f}x |", flush=True)


def torch_split_step(batch: int, alpha: float = 1.0):
    """A plain PyTorch split step of the default cnn (16, 32, 128, 64) cut after fc1, NoPeek
    loss CE + alpha * dCor(x, z) with Euclidean distances (torch.cdist), Adam for each party.
    Returns a function running one step on a fixed batch."""
    import torch
    from torch_train import build_parties, split_step

    torch.manual_seed(0)
    client, server, opt_c, opt_s = build_parties()
    x = torch.rand(batch, 1, 28, 28)
    y = torch.arange(batch) % 10

    def step():
        split_step(client, server, opt_c, opt_s, x, y, alpha)

    return step


def torch_comparison(steps):
    try:
        import torch
    except ImportError:
        print("\n## PyTorch comparison: skipped (PyTorch is not installed; pip install -e \".[bench]\")")
        return
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"\n## NoPeek split step of the default cnn (28x28, cut 4) against PyTorch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print("| batch | PyTorch (ms/step) | nopeek (ms/step) | nopeek speed relative to PyTorch |")
    print("|---|---|---|---|")
    for batch in (64, 256):
        run = torch_split_step(batch)
        for _ in range(3):
            run()
        rounds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(steps):
                run()
            rounds.append((time.perf_counter() - t0) / steps)
        t_torch = float(np.median(rounds))
        step, state, hp, x, y, _ = _setup("cnn", batch, 1, "map", "dcor")
        t_ours, _ = _time_steps(step, state, hp, x, y, batch, steps)
        print(f"| {batch} | {t_torch * 1e3:.2f} | {t_ours * 1e3:.2f} | {t_torch / t_ours:.2f}x |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["runner", "torch", "overhead", "stack", "clients", "all"], default="all")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(host_line())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    if args.part in ("runner", "all"):
        runner(args.steps)
    if args.part in ("torch", "all"):
        torch_comparison(args.steps)
    if args.part in ("overhead", "all"):
        overhead(args.steps)
    if args.part in ("stack", "all"):
        stack(args.steps)
    if args.part in ("clients", "all"):
        clients(args.steps)


if __name__ == "__main__":
    main()
