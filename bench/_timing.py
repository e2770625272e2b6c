"""Timing helpers shared by the benches that compare two ways of computing one thing."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_ms(fn, *args, calls: int = 20) -> float:
    """Median wall time (ms) of `calls` calls of fn(*args), each waited for, after one
    untimed call (which compiles)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def alternating_rounds(code: str, variants: dict, rounds: int, cwd: str) -> dict[str, list[float]]:
    """Run `python -c code` once per variant per round, alternating the variants round by round
    (the host's drift between rounds is larger than the spread within one); each variant is
    (extra argv, environment or None). The child prints its figure as its last line.
    Returns {variant: [figure per round]}."""
    figures = {key: [] for key in variants}
    for _ in range(rounds):
        for key, (argv, env) in variants.items():
            done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                                  cwd=cwd)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-1500:])
            figures[key].append(float(done.stdout.strip().splitlines()[-1]))
    return figures


def median_and_range(values: list[float]) -> str:
    """'median (min-max)', two decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
