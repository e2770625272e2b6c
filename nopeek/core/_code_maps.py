"""The process's memory maps, and relief before the kernel's limit on them.

XLA's CPU backend maps the code of each compiled kernel into memory regions of its own
(code, read-only data, data: about three per kernel). A process that compiles thousands of
programs (a long sweep, a notebook that runs many, the test suite) reaches the kernel's
per-process limit, `vm.max_map_count` (65,530 by default on Linux), and the next
compilation crashes it (an abort or a segmentation fault inside the JIT, no Python error).
`relieve_code_maps` drops jax's compiled programs when the process holds more than a share
of the limit; later calls compile again (from the persistent compilation cache where it is
on: `enable_compilation_cache`). Nothing it computes changes.
"""

from __future__ import annotations

import gc

MAPS = "/proc/self/maps"
LIMIT = "/proc/sys/vm/max_map_count"
SHARE = 0.4  # relieve above 40% of the limit: one more large program never crosses it


def map_count() -> int | None:
    """The number of memory maps this process holds (None where /proc is absent)."""
    try:
        with open(MAPS, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def map_limit() -> int | None:
    """The kernel's per-process limit on memory maps (None where it cannot be read)."""
    try:
        with open(LIMIT, encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def relieve_code_maps(share: float = SHARE) -> bool:
    """Clear jax's compiled programs (`jax.clear_caches()`) when this process holds more than
    `share` of `vm.max_map_count` memory maps; returns whether it did."""
    count, limit = map_count(), map_limit()
    if count is None or limit is None or count <= share * limit:
        return False
    import jax

    jax.clear_caches()
    gc.collect()
    return True
