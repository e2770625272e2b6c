"""Attack benchmarks: batched optimisation inversion against the same steps one image at a
time, and the inversion decoder at the default sweep's spatial cut, before and after.

Run:  python bench/attacks.py [--part inversion|decoder|all] [--images 256] [--steps 200]

decoder: the default sweep's cut 3 (mnist5k cnn after the pool, 14x14x8 activations) is
trained as the sweep trains it (7 cells, one stack), then the 7 decoders are fitted as one
stack with the previous decoder (resize-convolution, width 16, Adam 1e-3, 600 steps, no
held-out pairs) and with the current default (sub-pixel convolution, width 32, Adam 2e-3,
a budget of 600 steps with early stopping on 10% held-out pairs); wall time (fit and
reconstruction) and held-out SSIM of each, in the same run.

White-box inversion and UnSplit-style inversion of a digits mlp client (cut 1), all
images optimised together in one jitted step, against the same number of steps done
for each image alone (each image's run reuses one compiled step, so the ratio is the
batching, not compilation). Printed as ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import attacks  # noqa: E402
import metrics  # noqa: E402
from nopeek import data  # noqa: E402
from flax import nnx  # noqa: E402

from nopeek.protocol import build_model  # noqa: E402


def decoder():
    import jax.numpy as jnp

    from nopeek.attacking import attacker_indices
    from nopeek.protocol import over_stack
    from nopeek.sweeps import PRESETS, cells
    from nopeek.training import evaluate, train_stack

    config = PRESETS["default"]
    ds = data.load("mnist5k", seed=config.split_seed)
    group = [c for c in cells(config) if c.cut == "3"]
    r = train_stack(config.train_config("vanilla", "3"), ds, alphas=[c.alpha for c in group],
                    seeds=[c.seed for c in group], noise_scales=[c.noise_scale for c in group], progress=False)
    leak = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, seed=config.attack_seed)
    hp = {k: jnp.asarray(v) for k, v in r.hparams.items()}
    _, sent = evaluate(r.eval_fn, r.state.params, hp, ds.x_train[leak], ds.y_train[leak])
    z_leak, z_test = sent["z"], r.messages_test["z"]
    classifier = attacks.ReferenceClassifier(ds.x_train, ds.y_train)
    variants = {
        "before: resize-conv 16, lr 1e-3, 600 steps": dict(upsample="resize", width=16, lr=1e-3, validation=0),
        "after: sub-pixel 32, lr 2e-3, <= 600 steps, early stopping": {},
    }
    print(f"\n## Decoder attack at the default sweep's spatial cut 3: {len(group)} decoders as one stack")
    print("| decoder | wall (s) | steps | mean SSIM | SSIM per cell | classifier on reconstructions |")
    print("|---|---|---|---|---|---|")
    times = {}
    for name, kw in variants.items():
        t0 = time.perf_counter()
        fitted = attacks.fit_decoders(z_leak, ds.x_train[leak], steps=600, seed=0,
                                      map_models=lambda fn, ax: over_stack(fn, "map", ax), **kw)
        x_hat = fitted.reconstruct(z_test)
        times[name] = time.perf_counter() - t0
        scores = [attacks.scores_with_baseline(ds.x_test, x_hat[i], ds.x_train[leak], classifier=classifier,
                                               y=ds.y_test) for i in range(len(group))]
        print(f"| {name} | {times[name]:.1f} | {fitted.steps} | {np.mean([s['ssim'] for s in scores]):.4f} "
              f"| {' '.join(format(s['ssim'], '.3f') for s in scores)} "
              f"| {np.mean([s['classifier_accuracy'] for s in scores]):.3f} |", flush=True)
    before, after = times.values()
    print(f"\nspeed-up: {before / after:.2f}x")


def inversion(args):
    ds = data.load("digits")
    graphdef, params = nnx.split(build_model("mlp", (8, 8, 1), 10, seed=0).part(0, 1))
    _, clone_init = nnx.split(build_model("mlp", (8, 8, 1), 10, seed=99).part(0, 1))

    def apply(p, x):
        return nnx.merge(graphdef, p)(x)

    client = jax.jit(lambda x: apply(params, x))
    x = ds.x_test[: args.images]
    z = np.asarray(client(x))
    rounds = max(1, args.steps // 100)

    runs = {
        "whitebox": lambda zz: attacks.whitebox_inversion(client, zz, (8, 8, 1), steps=args.steps, lr=0.1),
        "unsplit": lambda zz: attacks.unsplit_inversion(apply, clone_init, zz, (8, 8, 1), rounds=rounds)[0],
    }
    print(f"\n## {args.images} images, {args.steps} steps each (unsplit: {rounds} rounds of 50 input + 50 model steps)")
    print("| attack | batched (s) | one image at a time (s) | speed-up | MSE batched | MSE one-by-one |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        run(z[:1])  # compile the one-image step
        run(z)  # compile the batched step
        t0 = time.perf_counter()
        batched = run(z)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = np.concatenate([run(z[i : i + 1]) for i in range(len(z))])
        t_single = time.perf_counter() - t0
        print(
            f"| {name} | {t_batched:.2f} | {t_single:.1f} | {t_single / t_batched:.0f}x "
            f"| {float(metrics.mse(x, batched)):.4f} | {float(metrics.mse(x, single)):.4f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["inversion", "decoder", "all"], default="all")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    if args.part in ("inversion", "all"):
        inversion(args)
    if args.part in ("decoder", "all"):
        decoder()


if __name__ == "__main__":
    main()
