"""Atomic file writes and safe (pickle-free) checkpoints.

A file is written to a temporary name in the same folder, flushed, fsynced and renamed
over the target, so a reader (or a resumed run) sees the old file or the new one, never
half of one. Checkpoints are Flax msgpack of plain parameter dicts.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from flax import nnx, serialization


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_params(path: str, tree: dict[str, nnx.State]) -> None:
    """Save named parameter states (e.g. {"client": ..., "server": ...}) as msgpack."""
    pure = {name: nnx.to_pure_dict(state) for name, state in tree.items()}
    atomic_write_bytes(path, serialization.msgpack_serialize(pure))


def load_params_into(path: str, tree: dict[str, nnx.State]) -> dict[str, nnx.State]:
    """Fill the given template states with the parameters saved at `path` (msgpack, no pickle)."""
    with open(path, "rb") as f:
        restored = serialization.msgpack_restore(f.read())
    for name, state in tree.items():
        if name not in restored:
            raise ValueError(f"{path}: checkpoint has no {name!r} parameters")
        nnx.replace_by_pure_dict(state, restored[name])
    return tree
