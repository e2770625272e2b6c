"""Sweep benchmarks, each printing wall times and their ratio measured in the same run.

--part stack: one cut group of the default sweep trained as one stack, against the same
  cells trained one by one in separate runs (each compiling its own program, as separate
  `nopeek train` runs would).
--part shards: the whole quick preset as one `nopeek sweep` process, against the same
  sweep as 2 shard processes run at once on this machine (`--shard 0/2`, `--shard 1/2`,
  into one folder; the second to finish merges), each timed from launch to exit.

Run:  python bench/sweep.py [--part all|stack|shards] [--preset default] [--cut 4] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nopeek import data  # noqa: E402
from nopeek.sweeps import PRESETS, cells  # noqa: E402
from nopeek.training import train_stack  # noqa: E402


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=("all", "stack", "shards"))
    parser.add_argument("--preset", default="default", choices=tuple(PRESETS), help="--part stack's preset")
    parser.add_argument("--cut", default="4", help="cut list of the group (vanilla)")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    if args.part in ("all", "stack"):
        bench_stack(args)
    if args.part in ("all", "shards"):
        bench_shards()


def bench_stack(args):
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



def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_shards(preset: str = "quick", shards: int = 2):
    """The quick preset in 1 process against `shards` shard processes at once (launch to exit)."""
    from nopeek.sweeps import TIMING_COLUMNS, read_rows

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    base = [sys.executable, "-m", "nopeek.cli", "sweep", "--preset", preset, "--quiet"]
    print(f"\n## {preset} preset: 1 process against {shards} shard processes at once ({os.cpu_count()} CPU cores)")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one, split = os.path.join(tmp, "one"), os.path.join(tmp, "shards")
        t0, c0 = time.perf_counter(), _children_cpu()
        subprocess.run([*base, "--out", one], check=True, env=env, stdout=subprocess.DEVNULL)
        t_one, c_one = time.perf_counter() - t0, _children_cpu() - c0
        t0, c0 = time.perf_counter(), _children_cpu()
        procs = [subprocess.Popen([*base, "--out", split, "--shard", f"{i}/{shards}"], env=env, stdout=subprocess.DEVNULL)
                 for i in range(shards)]
        if any(p.wait() for p in procs):
            raise SystemExit("a shard failed")
        t_split, c_split = time.perf_counter() - t0, _children_cpu() - c0

        def strip(path):
            return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in read_rows(path)]

        same = strip(os.path.join(one, "results.csv")) == strip(os.path.join(split, "results.csv"))
        n_rows = len(read_rows(os.path.join(one, "results.csv")))
    print(f"load average at the start: {load:.2f} (other work on the machine slows both runs)")
    print("| run | wall (s) | CPU time, all processes (s) |")
    print("|---|---|---|")
    print(f"| 1 process | {t_one:.1f} | {c_one:.1f} |")
    print(f"| {shards} shards at once | {t_split:.1f} | {c_split:.1f} |")
    print(f"\nspeed-up: {t_one / t_split:.2f}x; merged table equals the 1-process table ({n_rows} rows, timing "
          f"columns aside): {same}")


if __name__ == "__main__":
    main()
