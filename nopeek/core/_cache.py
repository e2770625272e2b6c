"""A small bounded cache for compiled programs and fitted models that are costly to rebuild.

Keys are values (tuples of configuration fields, content fingerprints), never `id()` of an
object that may be freed and its id reused. The cache keeps the `maxsize` most recently
used entries and drops the oldest beyond that.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Callable, Hashable

import numpy as np


class BoundedCache:
    """A least-recently-used mapping of at most `maxsize` entries."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The entry for `key`, made by `make()` (and kept) when absent."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = make()
        self._entries[key] = value
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def clear(self) -> None:
        self._entries.clear()


def fingerprint(*arrays) -> str:
    """A content hash of arrays (shape, dtype and bytes): the same data gives the same key."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
