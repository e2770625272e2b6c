"""Training benchmarks: NoPeek's overhead per step, and K stacked models against K sequential runs.

Run:  python bench/train.py [--part overhead|stack|all] [--steps 20]

Every figure is a ratio of two timings taken in the same run:
- overhead: a NoPeek split step (dCor term and its gradient at the cut) over a plain split
  step that never computes dCor, at batch 64, 256, 1024, for mlp (digits-sized input)
  and cnn (MNIST-sized input);
- stack: throughput of K = 8 models trained by one compiled step (`map`: unrolled in the
  program; `vmap`: batched) over the same 8 models stepped one after another.
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

from nopeek.config import TrainConfig  # noqa: E402
from nopeek.data import Dataset  # noqa: E402
from nopeek.train import init_stack, make_optimizer, make_step_fn  # noqa: E402

SHAPES = {"mlp": (8, 8, 1), "cnn": (28, 28, 1)}


def _fake_dataset(shape, n):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int32)
    return Dataset("bench", x, y, x[:64], y[:64], 10)


def _time_steps(step, state, hp, x, y, batch, steps):
    """Seconds per step (median of 3 rounds of `steps` steps), after a warm-up step."""
    n = x.shape[0]
    idx = [jnp.asarray(np.random.default_rng(i).choice(n, batch, replace=False)) for i in range(steps)]
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
    cfg = TrainConfig(dataset="digits", model=model, batch_size=batch, leakage=leakage)
    opt = make_optimizer("adam", 1e-3)
    fns, state = init_stack(cfg, ds, list(range(k)), opt)
    hp = {"alpha": jnp.full((k,), 1.0), "noise_scale": jnp.zeros((k,)), "seed": jnp.arange(k, dtype=jnp.int32)}
    step = make_step_fn(fns, opt, cfg, mode, leakage_kind=leakage)
    return step, state, hp, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)


def overhead(steps):
    print("\n## NoPeek step over plain split step (K = 1)")
    print("| model | batch | plain (ms/step) | NoPeek (ms/step) | overhead |")
    print("|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        for batch in (64, 256, 1024):
            t = {}
            for leakage in (None, "dcor"):
                step, state, hp, x, y = _setup(model, batch, 1, "map", leakage)
                t[leakage], _ = _time_steps(step, state, hp, x, y, batch, steps)
            print(f"| {model} | {batch} | {t[None] * 1e3:.2f} | {t['dcor'] * 1e3:.2f} | {t['dcor'] / t[None]:.2f}x |", flush=True)


def stack(steps, k=8, batch=64):
    print(f"\n## K = {k} stacked models vs {k} sequential runs (NoPeek step, batch {batch})")
    print("| model | sequential (ms per step of all K) | map (ms) | vmap (ms) | map speed-up | vmap speed-up |")
    print("|---|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        step1, state1, hp1, x, y = _setup(model, batch, 1, "map", "dcor")
        t_one, _ = _time_steps(step1, state1, hp1, x, y, batch, steps)
        sequential = k * t_one  # the K models share one compiled step; run one after another
        t = {}
        for mode in ("map", "vmap"):
            step, state, hp, x, y = _setup(model, batch, k, mode, "dcor")
            t[mode], _ = _time_steps(step, state, hp, x, y, batch, steps)
        print(
            f"| {model} | {sequential * 1e3:.1f} | {t['map'] * 1e3:.1f} | {t['vmap'] * 1e3:.1f} "
            f"| {sequential / t['map']:.2f}x | {sequential / t['vmap']:.2f}x |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["overhead", "stack", "all"], default="all")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    if args.part in ("overhead", "all"):
        overhead(args.steps)
    if args.part in ("stack", "all"):
        stack(args.steps)


if __name__ == "__main__":
    main()
