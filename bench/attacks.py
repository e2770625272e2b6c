"""Attack benchmark: batched optimisation inversion against the same steps one image at a time.

Run:  python bench/attacks.py [--images 256] [--steps 200]

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
from nopeek.models import build_model  # noqa: E402
from nopeek.split import split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    ds = data.load("digits")
    fns, params, _ = split(build_model("mlp", (8, 8, 1), 10, seed=0), 1)
    _, clone_init, _ = split(build_model("mlp", (8, 8, 1), 10, seed=99), 1)
    client = jax.jit(lambda x: fns.client_apply(params, x))
    x = ds.x_test[: args.images]
    z = np.asarray(client(x))
    rounds = max(1, args.steps // 100)

    runs = {
        "whitebox": lambda zz: attacks.whitebox_inversion(client, zz, (8, 8, 1), steps=args.steps, lr=0.1),
        "unsplit": lambda zz: attacks.unsplit_inversion(fns.client_apply, clone_init, zz, (8, 8, 1), rounds=rounds)[0],
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


if __name__ == "__main__":
    main()
