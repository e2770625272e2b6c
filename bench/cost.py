"""Cost benchmark: measured wall time of one split-learning client step and one server step
(vanilla, at the cut given) and of one federated-learning client step (the whole model),
next to the FLOPs XLA counts for the same compiled programs (`nopeek.cost_models`).

Run:  python bench/cost.py [--models mlp,cnn,vgg16,resnet50] [--batch 64] [--out DIR]

With --out: DIR/results.csv (one row per step: model, data set, cut, step, MFLOPs, ms,
GFLOP/s and its share of the matmul's) and DIR/run.json (the command, wall time, CPU, load,
and the matmul's GFLOP/s): the file behind docs/guide/cost.md's measured table
(`--models mlp,cnn,vgg16,resnet50 --out docs/results/cost-measured`).

A step is one compiled program per party piece: forward and backward (`jax.vjp`) of its
segment, plus the loss where the labels sit; timed as the median of repeated calls after
a warm-up, on random inputs. The reference measured in the same run is this machine's
float32 matmul throughput (2048 x 2048), so each step reads as a fraction of what the
cores reach on the densest work there is.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._host import docs_results  # noqa: E402
from nopeek.cost import CostConfig, check_cost, profiles  # noqa: E402

# model -> (data set whose shapes it runs on, cut)
SETTINGS = {"mlp": ("digits", 1), "cnn": ("mnist5k", 4), "cnn_nopeek": ("mnist5k", 4), "resnet": ("cifar10", 2),
            "vgg16": ("cifar10", 1), "resnet50": ("cifar100", 1)}


def matmul_gflops(n: int = 2048) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[2] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated models (of: " + ", ".join(SETTINGS) + ")")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=None, help="write results.csv and run.json into this folder")
    args = parser.parse_args()
    results = docs_results()
    before, t0 = results.load(), time.perf_counter()
    rows = []
    peak = matmul_gflops()
    print(f"reference: float32 matmul 2048 x 2048 at {peak:.1f} GFLOP/s on {os.cpu_count()} cores, jax {jax.__version__}\n")
    print("| model | data | cut | step | MFLOPs/step | ms/step | GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        dataset, cut = SETTINGS[model]
        config = check_cost(CostConfig(model=model, dataset=dataset, cuts=(cut,), batch_size=args.batch, client_counts=(2,), measure=True))
        split, whole = profiles(config, 2)
        steps = [(f"SL {p.name}", p) for p in split.parties] + [("FL client", whole.data_holder)]
        for label, p in steps:
            rate = p.step_flops / p.step_seconds / 1e9
            print(f"| {model} | {dataset} | {cut} | {label} | {p.step_flops / 1e6:.2f} | {p.step_seconds * 1e3:.3f} | "
                  f"{rate:.1f} | {rate / peak:.2f} |", flush=True)
            rows.append({"model": model, "dataset": dataset, "cut": cut, "step": label, "mflops": p.step_flops / 1e6,
                         "ms": p.step_seconds * 1e3, "gflops": rate, "of_matmul": rate / peak})
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.csv"), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        command = (f"python bench/cost.py --models {args.models} --batch {args.batch} "
                   f"--out {os.path.relpath(os.path.abspath(args.out), root)}")
        results.write_run(args.out, command, time.perf_counter() - t0, before, matmul_gflops=round(peak, 1))
        print(args.out)


if __name__ == "__main__":
    main()
