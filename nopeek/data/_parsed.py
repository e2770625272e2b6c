"""Bundled data sets parsed and split once: their arrays kept as .npz files in the user's cache.

mnist5k ships as CSV text, and parsing it costs seconds on every run; splitting any set
stratified costs scikit-learn's import. The arrays are written to `<cache>/data/NAME-KEY.npz`
(atomically) beside a digest of their own bytes, KEY a hash of what they were made from (the
source file's bytes; the labels, fraction and seed of a split). A later run loads them (never
unpickled) and uses them only when the digest matches, else it makes them again and rewrites.
With caching off (`NOPEEK_NO_CACHE=1`) or no writable cache folder, it makes them every time.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Callable

import numpy as np

from nopeek.core import atomic_write_bytes, user_cache_dir


def file_hash(path: str) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def arrays_digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """sha256 over each array's name, dtype, shape and bytes, in name order -> (32,) uint8."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return np.frombuffer(h.digest(), np.uint8)


def _read(path: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError):
        return None
    digest = stored.pop("digest", None)
    if digest is None or not np.array_equal(digest, arrays_digest(stored)):
        return None
    return stored


def cached_arrays(name: str, key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`make()`'s arrays, from `<cache>/data/NAME-KEY.npz` when it holds them (digest checked).

    Args:
      name: what the arrays are (the cache file's prefix).
      key: a hash of everything `make` depends on.
      make: () -> {array name: array}, plain numeric arrays.
    """
    folder = user_cache_dir("data")
    if folder is None:
        return make()
    path = os.path.join(folder, f"{name}-{key}.npz")
    if os.path.exists(path):
        stored = _read(path)
        if stored is not None:
            return stored
    arrays = make()
    buffer = io.BytesIO()
    np.savez(buffer, digest=arrays_digest(arrays), **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # a read-only or full cache folder only costs the next run the work
    return arrays


def cached_parse(name: str, source: str, parse: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`parse()`'s arrays for the bundled file `source` (its hash keys the cache)."""
    return cached_arrays(name, file_hash(source)[:16], parse)


def cached_split(name: str, y: np.ndarray, test_size: float, seed: int,
                 split: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`split()`'s {"train", "test"} index arrays for labels `y`, keyed by y's bytes, the test
    size (a fraction or a count) and the seed: a run on a bundled set need not import
    scikit-learn to split it. The split must depend on nothing else."""
    y = np.asarray(y)
    key = hashlib.sha256(np.ascontiguousarray(y).tobytes() + f"|{y.dtype.str}|{test_size!r}|{seed}".encode())
    return cached_arrays(f"split-{name}", key.hexdigest()[:16], split)
