"""What nopeek wrote in a folder, and the check every command makes before it writes into one.

A folder's kind is told from the files each command leaves, so folders written by any
earlier version are told apart too:

| kind | written by | told by |
| --- | --- | --- |
| `sweep` | `nopeek sweep` | results.csv, a shards/ folder, or (before its first row) a config.json with a sweep's `alphas` |
| `run` | `nopeek train` | metrics.json |
| `fsha` | `nopeek train --server fsha` | scores.json whose `attack` is fsha |
| `audit` | `nopeek audit` | scores.json with `targets` |
| `attack` | `nopeek attack` | any other scores.json |
| `cost` | `nopeek cost` | cost.csv |

`staging_folder` and `publish_folder` make an output folder whole or absent: the results are
written beside it and renamed into place when the work is done, with the list of the files
written (`MANIFEST`, a hidden `.nopeek-files`).

`check_writable(out, kinds, force=...)` refuses, before any work, an output folder that holds
something else: another command's results, or files nopeek did not write; `--force` never
reaches those, nor a file a user added to a command's folder after it was written (one not in
its `MANIFEST`; folders written before the manifest existed have none, and `--force` replaces
them whole). It refuses the current folder, or one above it, where a replacement would pull
the ground from under the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from nopeek.core._io import read_json, user_umask, write_json
from nopeek.errors import ConfigError

#: Each kind, as a user would name it.
KINDS = {
    "sweep": "a sweep (`nopeek sweep`)",
    "run": "a run (`nopeek train`)",
    "fsha": "an FSHA run (`nopeek train --server fsha`)",
    "audit": "an audit (`nopeek audit`)",
    "attack": "an attack's scores (`nopeek attack`)",
    "cost": "a cost report (`nopeek cost`)",
    "other": "files nopeek did not write",
}


#: The command that writes each kind.
COMMANDS = {"sweep": "nopeek sweep", "run": "nopeek train", "fsha": "nopeek train", "audit": "nopeek audit",
            "attack": "nopeek attack", "cost": "nopeek cost"}


#: The hidden file `publish_folder` leaves in a folder: the relative paths of the files it put there.
MANIFEST = ".nopeek-files"


def _files_below(folder: str) -> tuple[list[str], list[str]]:
    """Relative paths ('/'-separated) of every file below `folder`, sorted, hidden names
    (nopeek's manifest, probes and temporary files, a `.DS_Store`) left out; and, apart, the
    folders below it with a manifest of their own (written whole by a later command:
    `nopeek attack`'s `RUN/attacks/NAME`), whose files are not in the first list."""
    found, nested = [], []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        path = (lambda name: name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))  # noqa: E731
        nested += [path(d) for d in dirs if not d.startswith(".") and os.path.isfile(os.path.join(root, d, MANIFEST))]
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.isfile(os.path.join(root, d, MANIFEST))]
        found += [path(name) for name in files if not name.startswith(".")]
    return sorted(found), sorted(nested)


def foreign_files(folder: str) -> list[str] | None:
    """The files below `folder` that its `MANIFEST` does not list (added after nopeek wrote
    it; in a folder below it with a manifest of its own, those that one does not list), or
    None where `folder` has no readable manifest (written before there was one)."""
    try:
        listed = read_json(os.path.join(folder, MANIFEST))
    except (OSError, ValueError):
        return None
    if not isinstance(listed, list):
        return None
    listed = {name for name in listed if isinstance(name, str)}
    files, nested = _files_below(folder)
    added = [name for name in files if name not in listed]
    for sub in nested:
        added += [f"{sub}/{name}" for name in foreign_files(os.path.join(folder, sub)) or ()]
    return added


def list_in_manifest(folder: str, *names: str) -> None:
    """Add `names` (relative paths) to `folder`'s `MANIFEST`, where it has one: files a later
    command wrote into it that `--force` may replace with the folder (`nopeek report`'s page)."""
    path = os.path.join(folder, MANIFEST)
    try:
        listed = read_json(path)
    except (OSError, ValueError):
        return
    if isinstance(listed, list) and not set(names) <= set(listed):
        write_json(path, sorted(set(listed) | set(names)))


def _json_keys(path: str) -> dict:
    """The top-level object of a JSON file, or {} (unreadable, or not an object)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):  # a damaged file's ConfigError is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def folder_kind(folder: str) -> str | None:
    """One of `KINDS` for what is in `folder` ("other": files nopeek did not write), or None
    for an absent folder or one holding only hidden names (a `.DS_Store`, nopeek's own
    `.tmp-` files and write probes, which a command starting at the same moment may have left)."""
    if not os.path.isdir(folder) or not [name for name in os.listdir(folder) if not name.startswith(".")]:
        return None
    has = lambda name: os.path.isfile(os.path.join(folder, name))  # noqa: E731
    if has("results.csv") or os.path.isdir(os.path.join(folder, "shards")):
        return "sweep"
    if has("metrics.json"):
        return "run"
    if has("cost.csv"):
        return "cost"
    if has("scores.json"):
        scores = _json_keys(os.path.join(folder, "scores.json"))
        if "targets" in scores:
            return "audit"
        return "fsha" if scores.get("attack") == "fsha" else "attack"
    if has("config.json") and "alphas" in _json_keys(os.path.join(folder, "config.json")):
        return "sweep"
    return "other"


def _holds_cwd(folder: str) -> bool:
    here = os.path.join(os.path.realpath(os.getcwd()), "")
    return here.startswith(os.path.join(os.path.realpath(folder), ""))


def check_writable(out: str, kinds: tuple[str, ...], *, force: bool, option: str = "--out",
                   replaces: bool = True) -> str | None:
    """Refuse `out` before any work unless it is absent, empty, or holds one of `kinds` (the
    command's own; with `replaces`, only with `force`). Returns the folder's kind.

    Raises:
      ConfigError: naming `option`, what the folder holds and what to do.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"{option} {out}: is a file, not a folder")
    if replaces and os.path.isdir(out) and _holds_cwd(out):
        raise ConfigError(f"{option} {out}: is the current folder (or holds it), which this command would replace; "
                          f"run from elsewhere or choose another {option}")
    found = folder_kind(out)
    if found is None:
        return None
    command = COMMANDS[kinds[0]]
    if found not in kinds:
        raise ConfigError(f"{option} {out}: holds {KINDS[found]}, not what `{command}` writes; choose another "
                          f"{option} (--force reaches only what `{command}` wrote)")
    if replaces and not force:
        raise ConfigError(f"{option} {out}: holds {KINDS[found]} already; use another {option}, or --force to replace it")
    added = foreign_files(out) if replaces else None
    if added:
        shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
        raise ConfigError(f"{option} {out}: holds {KINDS[found]} and {len(added)} file(s) `{command}` did not write "
                          f"({shown}); --force replaces only what it wrote: move them, or choose another {option}")
    return found


def staging_folder(out: str, option: str = "--out") -> str:
    """A private folder beside `out` for a command to write its results into, made before the
    work so that a place the user cannot write in fails at once, not after it; readable as any
    folder the user makes.

    Raises:
      ConfigError: `out`'s parent cannot be made or written in.
    """
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)
    except OSError as err:
        raise ConfigError(f"{option} {out}: cannot write there ({err.strerror or err})") from None
    os.chmod(tmp, 0o777 & ~user_umask())
    return tmp


def resume_folder(out: str) -> str:
    """The hidden folder beside `out` (`.NAME.resume`) where a command that writes `out` whole
    keeps what an interrupted run can resume from (`nopeek train`: its epoch checkpoints)."""
    out = os.path.abspath(out)
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.resume")


def publish_folder(tmp: str, out: str) -> None:
    """Put the finished folder `tmp` at `out`, replacing what was there (set aside first, put
    back if the last rename fails, then removed), so `out` is whole or absent. `tmp` gets its
    `MANIFEST` first: what a later `--force` may replace."""
    write_json(os.path.join(tmp, MANIFEST), _files_below(tmp)[0])
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.old-", dir=os.path.dirname(tmp))
    os.rename(out, os.path.join(aside, "old"))
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(os.path.join(aside, "old"), out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
