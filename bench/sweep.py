"""Sweep benchmark: one cut group of the default sweep trained as one stack, against the
same cells trained one by one in separate runs (each compiling its own program, as
separate `nopeek train` runs would).

Run:  python bench/sweep.py [--preset default] [--cut 4] [--epochs N]

Prints both wall times and their ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nopeek import data  # noqa: E402
from nopeek.sweep import PRESETS, cells  # noqa: E402
from nopeek.train import train_stack  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=tuple(PRESETS))
    parser.add_argument("--cut", default="4", help="cut list of the group (vanilla)")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    config = PRESETS[args.preset]
    if args.epochs:
        config = config.replace(epochs=args.epochs)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    ds = data.load(config.dataset, seed=config.split_seed, data_dir=config.data_dir, limit=config.limit)
    group = [c for c in cells(config) if (c.topology, c.cut) == ("vanilla", args.cut)]
    tc = config.train_config("vanilla", args.cut)
    kw = dict(progress=False)

    t0 = time.perf_counter()
    stacked = train_stack(tc, ds, alphas=[c.alpha for c in group], seeds=[c.seed for c in group],
                          noise_scales=[c.noise_scale for c in group], **kw)
    t_stacked = time.perf_counter() - t0

    t0 = time.perf_counter()
    alone = []
    for c in group:
        jax.clear_caches()  # a separate run compiles its own program
        alone.append(train_stack(tc, ds, alphas=[c.alpha], seeds=[c.seed], noise_scales=[c.noise_scale], **kw))
    t_alone = time.perf_counter() - t0

    print(f"\n## {config.dataset} {config.model} cut {args.cut}: {len(group)} cells, {config.epochs} epochs")
    print("| training | wall (s) | test accuracy per cell |")
    print("|---|---|---|")
    print(f"| one stack | {t_stacked:.1f} | {' '.join(f'{a:.3f}' for a in stacked.test_accuracy)} |")
    print(f"| one by one | {t_alone:.1f} | {' '.join(f'{r.test_accuracy[0]:.3f}' for r in alone)} |")
    print(f"\nstacked speed-up: {t_alone / t_stacked:.2f}x")


if __name__ == "__main__":
    main()
