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

from nopeek.errors import CheckpointError, ConfigError


def user_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), since
    setting it to read it back is a race with any thread creating files meanwhile."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_folder(out: str, option: str = "--out") -> None:
    """Refuse an output folder that cannot be made, before any work: a file where the folder
    (or one of its parents) should be, or a parent the user may not write in. Leaves nothing
    behind: the last check makes an empty folder in the deepest existing parent and removes
    it (permission bits do not tell for root, read-only mounts, sysfs, ACLs or NFS).

    Raises:
      ConfigError: naming `option` and the path.
    """
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} {out}: is a file, not a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{option} {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {out}: cannot write in {existing} (permission denied)")
    before = os.stat(existing)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nopeek-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{option} {out}: cannot write there ({err.strerror or err})") from None
    try:  # the parent's times as they were: a refused command leaves no trace at all
        os.utime(existing, ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError:
        pass  # a folder the user may write in but does not own


def make_output_folder(out: str, option: str = "--out") -> None:
    """`os.makedirs(out, exist_ok=True)`, failing in one line that names `option` and the path."""
    check_output_folder(out, option)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{option} {out}: cannot write there ({err.strerror or err})") from None


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one rename; the file gets the mode any new file of the
    user's gets (0666 less the umask), not the temporary file's private 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~user_umask())
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
    """The JSON value in `path`.

    Raises:
      ConfigError: the file is not valid JSON (damaged, cut short, not text), naming it and where.
      OSError: it cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            what = err.msg.removesuffix(" at")  # "Unterminated string starting at" + " at line ..."
            raise ConfigError(f"{path}: not valid JSON ({what} at line {err.lineno}, column {err.colno}): "
                              "damaged or cut short; write it again with the command that made it") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not JSON text ({err.reason} at byte {err.start}): damaged, or another "
                              "file under this name; write it again with the command that made it") from None


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _pure(tree):
    """Nested dicts of nnx.State (or plain arrays) -> nested dicts of arrays, every key a
    string: an `nnx.List`'s layers are keyed 0, 1, ... in the state, and msgpack readers that
    refuse integer map keys (flax's `msgpack_restore` before 0.12.8) could not read them back;
    `nnx.replace_by_pure_dict` turns "0" back into 0."""
    from flax import nnx  # checkpoints need Flax; the rest of this module does not

    if isinstance(tree, nnx.State):
        return _pure(nnx.to_pure_dict(tree))  # plain nested dicts: their keys made strings below
    if not isinstance(tree, dict):  # a plain array (a defence's own parameters)
        return tree
    return {str(k): _pure(v) for k, v in tree.items()}


def _flat(tree, prefix=()):
    """{path tuple: leaf} of a nested dict (msgpack restores lists as dicts of "0", "1", ...)."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flat(v, (*prefix, str(k))))
    else:
        out[prefix] = tree
    return out


def save_params(path: str, tree: dict) -> None:
    """Save nested parameter states (e.g. {party: {segment: State}}) as msgpack, atomically."""
    from flax import serialization

    atomic_write_bytes(path, serialization.msgpack_serialize(_pure(tree)))


def load_params_into(path: str, tree: dict) -> dict:
    """Fill the template states in `tree` with the parameters saved at `path` (msgpack, no pickle).

    Raises:
      CheckpointError: unreadable or truncated file, or a parameter missing, extra or of
        another shape than the template's (the message names the file and the parameter).
    """
    from flax import nnx, serialization

    try:
        with open(path, "rb") as f:
            restored = serialization.msgpack_restore(f.read())
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror})") from err
    except Exception as err:  # msgpack raises its own types for truncated or foreign data
        hint = ""
        if "map key" in str(err):  # integer keys, which flax before 0.12.8 refuses to read
            hint = ("; its layers are keyed by integers (written by an older nopeek under flax 0.12.8 or later), "
                    "which this flax cannot read: upgrade flax to 0.12.8 or later")
        raise CheckpointError(f"{path}: not a readable nopeek checkpoint ({type(err).__name__}: {err}){hint}") from err
    if not isinstance(restored, dict):
        raise CheckpointError(f"{path}: not a nopeek checkpoint (a {type(restored).__name__}, not named parameters)")
    want = _flat(_pure(tree))
    got = _flat(restored)
    for key, value in want.items():
        name = "/".join(key)
        if key not in got:
            raise CheckpointError(f"{path}: parameter {name} is missing; the checkpoint does not match the run's config")
        if tuple(getattr(got[key], "shape", ())) != tuple(value.shape):
            raise CheckpointError(f"{path}: parameter {name} has shape {tuple(got[key].shape)} in the checkpoint "
                                  f"but {tuple(value.shape)} in the model the config describes")
    extra = sorted("/".join(k) for k in set(got) - set(want))
    if extra:
        raise CheckpointError(f"{path}: parameter {extra[0]} is not in the model the config describes")

    def fill(template, saved):
        if isinstance(template, nnx.State):
            nnx.replace_by_pure_dict(template, saved)
            return template
        if not isinstance(template, dict):  # a plain array (a defence's own parameters)
            import numpy as np

            return np.asarray(saved, dtype=template.dtype)
        return {k: fill(v, saved[str(k)]) for k, v in template.items()}  # saved keys are strings (_pure)

    return fill(tree, restored)
