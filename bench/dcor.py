"""Distance-correlation benchmark: speed against `dcor` and against two Gram products; blocked memory.

Run:  python bench/dcor.py            (all parts, ~6-9 minutes on 2 cores)
      python bench/dcor.py --part speed|gram|blocked|precision|permutation|partial [--sizes 20000,60000]

Every figure is a ratio against a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

# This file is named like the `dcor` package it measures against: take its own folder
# off the import path, and put the repository root on it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from bench._host import host_line  # noqa: E402


def _best_of(fn, repeats=5):
    """Best wall time of `repeats` calls of `fn` (already warm)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _data(n, p, q, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, p)).astype(np.float32)
    z = np.maximum(x @ rng.normal(size=(p, q)).astype(np.float32) / np.sqrt(p), 0.0)
    return x, z


def speed_against_dcor(sizes=(256, 1024, 2048)):
    import dcor
    import jax

    import metrics

    fn = jax.jit(metrics.distance_correlation)
    print("\n## jitted metrics.distance_correlation vs dcor.distance_correlation (784-d vs 256-d, float32)")
    print("| n | dcor (s) | nopeek (s) | speed-up | abs diff |")
    print("|---|---|---|---|---|")
    for n in sizes:
        x, z = _data(n, 784, 256)
        ours = float(fn(x, z).block_until_ready())
        t_ours = _best_of(lambda: fn(x, z).block_until_ready())
        x64, z64 = x.astype(np.float64), z.astype(np.float64)
        need_gib = n * n * 784 * 8 / 2**30  # dcor's (n, n, p) float64 difference tensor
        try:
            t0 = time.perf_counter()
            ref = dcor.distance_correlation(x64, z64)
            t_ref = time.perf_counter() - t0
        except MemoryError:
            print(f"| {n} | out of memory (asks {need_gib:.1f} GiB) | {t_ours:.4f} | - | - |")
            continue
        print(f"| {n} | {t_ref:.3f} | {t_ours:.4f} | {t_ref / t_ours:.0f}x | {abs(ours - ref):.1e} |")


def against_gram(sizes=(1024, 2048, 4096)):
    import jax
    import jax.numpy as jnp

    import metrics

    dcor_fn = jax.jit(metrics.distance_correlation)
    hp = jax.lax.Precision.HIGHEST

    @jax.jit
    def grams(x, z):  # the unavoidable work: both Gram matrices
        return jnp.matmul(x, x.T, precision=hp), jnp.matmul(z, z.T, precision=hp)

    print("\n## distance_correlation vs the two Gram products x @ x.T and z @ z.T (784-d vs 256-d)")
    print("| n | Gram products (s) | dCor (s) | ratio |")
    print("|---|---|---|---|")
    for n in sizes:
        x, z = _data(n, 784, 256)
        jax.block_until_ready(grams(x, z))
        dcor_fn(x, z).block_until_ready()
        t_gram = _best_of(lambda: jax.block_until_ready(grams(x, z)))
        t_dcor = _best_of(lambda: dcor_fn(x, z).block_until_ready())
        print(f"| {n} | {t_gram:.4f} | {t_dcor:.4f} | {t_dcor / t_gram:.2f}x |")


def precision(sizes=(2000, 8000)):
    """float32 against a float64 reference of the same function (blocked, 784-d vs 64-d)."""
    import jax

    import metrics

    print("\n## float32 accuracy against float64 (784-d uniform inputs vs 64-d dependent activations)")
    print("| n | dCor (float64) | abs error float32 | u-dCor^2 abs error float32 |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        x = rng.uniform(size=(n, 784))
        y = np.tanh(x[:, :64] @ rng.normal(size=(64, 64)) / 4) + 0.5 * rng.normal(size=(n, 64))
        f32 = [float(f(x.astype(np.float32), y.astype(np.float32), block_size=1000))
               for f in (metrics.distance_correlation, metrics.u_distance_correlation_sqr)]
        with jax.enable_x64(True):
            f64 = [float(f(x, y, block_size=1000)) for f in (metrics.distance_correlation, metrics.u_distance_correlation_sqr)]
        print(f"| {n} | {f64[0]:.6f} | {abs(f32[0] - f64[0]):.1e} | {abs(f32[1] - f64[1]):.1e} |", flush=True)


def _blocked_child(n, block_size):
    """Run in a fresh process so that ru_maxrss is this computation's peak alone."""
    import jax

    import metrics

    x, z = _data(n, 784, 64)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = jax.jit(lambda a, b: metrics.distance_correlation(a, b, block_size=block_size))
    t0 = time.perf_counter()
    value = float(fn(x, z))
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inputs_mib = (x.nbytes + z.nbytes) / 2**20
    dense_gib = 2 * n * n * 4 / 2**30  # the two n x n float32 distance matrices it avoids
    print(
        f"| {n} | {block_size} | {elapsed:.1f} | {peak / 2**20:.2f} | {(peak - base_rss) / 2**20:.2f} "
        f"| {inputs_mib:.0f} | {dense_gib:.1f} | {value:.4f} |",
        flush=True,
    )


def blocked(sizes=(20000, 60000), block_size=1024):
    print("\n## blocked exact dCor, 784-d vs 64-d float32 (fresh process each; time includes compilation)")
    print("| n | block | seconds | peak RSS (GiB) | growth over data (GiB) | inputs (MiB) | dense would need (GiB) | dCor |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        subprocess.run(
            [sys.executable, __file__, "--child", str(n), str(block_size)], check=True
        )


def permutation(sizes=(1000,), count=200):
    """The permutation test against B separate jitted dCor calls and against dcor's test."""
    import dcor
    import jax

    import metrics

    test = jax.jit(lambda a, b, k: metrics.distance_correlation_test(a, b, permutations=count, key=k))
    one = jax.jit(metrics.distance_correlation)
    print(f"\n## permutation test, {count} permutations, 784-d vs 64-d float32 (dcor: float64, same n)")
    print("| n | compile + first run (s) | metrics test (s) | B jitted dCor calls (s) | speed-up | dcor test (s) | speed-up | dCor | p | dcor_null95 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        x, z = _data(n, 784, 64)
        t0 = time.perf_counter()
        jax.block_until_ready(test(x, z, jax.random.key(0)))
        t_first = time.perf_counter() - t0
        keys = iter(jax.random.split(jax.random.key(1), 10))
        t_test = _best_of(lambda: jax.block_until_ready(test(x, z, next(keys))), repeats=3)
        result = test(x, z, jax.random.key(0))
        perms = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(jax.random.key(2), count)))
        one(x, z).block_until_ready()
        t_calls = _best_of(lambda: [one(x, z[p]).block_until_ready() for p in perms], repeats=1)
        x64, z64 = x.astype(np.float64), z.astype(np.float64)
        t0 = time.perf_counter()
        dcor.independence.distance_covariance_test(z64, x64, num_resamples=count, random_state=0)
        t_dcor = time.perf_counter() - t0
        print(
            f"| {n} | {t_first:.2f} | {t_test:.3f} | {t_calls:.2f} | {t_calls / t_test:.1f}x | {t_dcor:.2f} "
            f"| {t_dcor / t_test:.1f}x | {float(result.dcor):.4f} | {float(result.pvalue):.3f} | {float(result.dcor_null95):.4f} |",
            flush=True,
        )


def _labels_of(x, classes=10, seed=1):
    """One-hot labels that depend on x (the argmax of a random projection), `(n, classes)`."""
    w = np.random.default_rng(seed).normal(size=(x.shape[1], classes)).astype(np.float32)
    return np.eye(classes, dtype=np.float32)[np.argmax((x - x.mean(axis=0)) @ w, axis=1)]


def _partial_child(n, block_size, partial_dcor):
    """Blocked pdCor(x, z; y) (784-d x, 64-d z, 10-d one-hot y), or its reference, the
    blocked dCor(x, z) of the same data, in a fresh process: ru_maxrss is its own peak."""
    import jax

    import metrics

    x, z = _data(n, 784, 64)
    y = _labels_of(x)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if partial_dcor:
        label, inputs = "pdCor(x, z; y)", (x, z, y)
        fn = jax.jit(lambda a, b, c: metrics.partial_distance_correlation(a, b, c, block_size=block_size))
    else:
        label, inputs = "dCor(x, z)", (x, z)
        fn = jax.jit(lambda a, b: metrics.distance_correlation(a, b, block_size=block_size))
    t0 = time.perf_counter()
    value = float(fn(*inputs))
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inputs_mib = sum(a.nbytes for a in inputs) / 2**20
    dense_gib = len(inputs) * n * n * 4 / 2**30  # the n x n float32 distance matrices it avoids
    print(
        f"| {label} | {n} | {block_size} | {elapsed:.1f} | {peak / 2**20:.2f} | {(peak - base_rss) / 2**20:.2f} "
        f"| {inputs_mib:.0f} | {dense_gib:.1f} | {value:.4f} |",
        flush=True,
    )


def partial(sizes=(20000, 60000), block_size=1024):
    """Blocked pdCor against blocked dCor of the same x and z (each in a fresh process)."""
    print("\n## blocked exact partial dCor pdCor(x, z; y), 784-d x vs 64-d z given 10-d one-hot y, float32")
    print("(fresh process each; time includes compilation; dCor(x, z) of the same data is the reference)")
    print("| statistic | n | block | seconds | peak RSS (GiB) | growth over data (GiB) | inputs (MiB) | dense would need (GiB) | value |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for partial_dcor in ("0", "1"):
            subprocess.run([sys.executable, __file__, "--partial-child", str(n), str(block_size), partial_dcor], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "gram", "blocked", "precision", "permutation", "partial", "all"], default="all")
    parser.add_argument("--sizes", default=None, help="comma-separated n for the chosen part")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--partial-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _blocked_child(*args.child)
        return
    if args.partial_child:
        _partial_child(*args.partial_child)
        return
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    print(host_line())
    if args.part in ("speed", "all"):
        speed_against_dcor(*(sizes,) if sizes else ())
    if args.part in ("gram", "all"):
        against_gram(*(sizes,) if sizes else ())
    if args.part in ("blocked", "all"):
        blocked(*(sizes,) if sizes else ())
    if args.part in ("precision", "all"):
        precision(*(sizes,) if sizes else ())
    if args.part in ("permutation", "all"):
        permutation(*(sizes,) if sizes else ())
    if args.part in ("partial", "all"):
        partial(*(sizes,) if sizes else ())


if __name__ == "__main__":
    main()
