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
reaches those, nor anything a user added to a command's folder after it was written (not in
its `MANIFEST`: files, hidden ones, links, empty folders, a copy of a folder nopeek wrote
inside it). Folders written before the manifest existed have none: a cost report's own file
names (`LEGACY_NAMES`) are replaced and anything else refused, other kinds are replaced whole.
It refuses the current folder, or one above it, where a replacement would pull
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


#: The hidden file `publish_folder` leaves in a folder: the relative paths of what it put there
#: (files, and empty folders with a trailing "/"), and of the folders a later command wrote
#: whole inside it ("attacks/decoder/": `nopeek attack`'s), which carry lists of their own.
MANIFEST = ".nopeek-files"

#: The files `nopeek cost` wrote into a folder before folders carried a manifest: what
#: `--force` may replace there (it used to write in place, keeping anything else).
LEGACY_NAMES = {"cost": {"cost.csv", "cost.png", "cost_sensitivity.csv", "cost_sensitivity.png", "cost_config.json",
                         "cost.txt", "report.html"}}


def _own_hidden(name: str) -> bool:
    """nopeek's own hidden names (the manifest, temporary files, write probes, a staging or
    set-aside folder, epoch checkpoints: a sweep's `.resume`, a run's `.NAME.resume`) and an
    operating system's `.DS_Store`: never a user's."""
    return name in (MANIFEST, ".DS_Store") or name.startswith((".tmp-", ".nopeek-probe-")) or (
        name.startswith(".") and (".tmp-" in name or ".old-" in name or name.endswith(".resume")))


def _entries(folder: str) -> tuple[list[str], list[str]]:
    """What is below `folder`, as relative '/'-separated paths, sorted: every file, every
    symbolic link (not followed), every empty folder ("name/"), hidden names included but
    nopeek's own (`_own_hidden`); and, apart, the folders below it that carry a manifest of
    their own (written whole by a later command), not looked into."""
    found, nested = [], []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)

        def path(name, rel=rel):
            return name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")

        keep = []
        for d in dirs:
            full = os.path.join(root, d)
            if _own_hidden(d):
                continue
            if os.path.islink(full):
                found.append(path(d))
            elif os.path.isfile(os.path.join(full, MANIFEST)):
                nested.append(path(d))
            else:
                keep.append(d)
        dirs[:] = keep
        found += [path(name) for name in files if not _own_hidden(name)]
        if rel != "." and not [name for name in os.listdir(root) if not _own_hidden(name)]:
            found.append(path(""))  # an empty folder: "rel/"
    return sorted(found), sorted(nested)


def foreign_files(folder: str) -> list[str] | None:
    """What is below `folder` that its `MANIFEST` does not list: a user's files, links and
    folders added after nopeek wrote it (in a folder below it that the list names as written
    whole later, what that one's own list lacks; a folder below it with a list that this one
    does not name, a user's copy, is foreign whole, "name/"); None where `folder` has no
    readable manifest (written before there was one)."""
    try:
        listed = read_json(os.path.join(folder, MANIFEST))
    except (OSError, ValueError):
        return None
    if not isinstance(listed, list):
        return None
    listed = {name for name in listed if isinstance(name, str)}
    entries, nested = _entries(folder)
    added = [name for name in entries if name not in listed]
    for sub in nested:
        if f"{sub}/" in listed:
            added += [f"{sub}/{name}" for name in foreign_files(os.path.join(folder, sub)) or ()]
        else:
            added.append(f"{sub}/")
    return added


def list_in_manifest(folder: str, *names: str) -> None:
    """Add `names` (relative paths; a folder with a trailing "/") to `folder`'s `MANIFEST`,
    where it has one: what a later command wrote into it that `--force` may replace with the
    folder (`nopeek report`'s page, a folder `publish_folder` put inside it)."""
    path = os.path.join(folder, MANIFEST)
    try:
        listed = read_json(path)
    except (OSError, ValueError):
        return
    if isinstance(listed, list) and not set(names) <= set(listed):
        write_json(path, sorted(set(listed) | set(names)))


def _list_in_enclosing(out: str) -> None:
    """Name the folder `out`, just written whole, in the manifest of the nearest folder above
    it that has one (a run holding `attacks/decoder`), so that folder's `--force` replaces it
    with the rest, and only it: a user's copy beside it stays foreign."""
    out = os.path.abspath(out)
    above = os.path.dirname(out)
    while True:
        if os.path.isfile(os.path.join(above, MANIFEST)):
            list_in_manifest(above, os.path.relpath(out, above).replace(os.sep, "/") + "/")
            return
        parent = os.path.dirname(above)
        if parent == above:
            return
        above = parent


def _json_keys(path: str) -> dict:
    """The top-level object of a JSON file, or {} (unreadable, or not an object)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):  # a damaged file's ConfigError is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def folder_kind(folder: str) -> str | None:
    """One of `KINDS` for what is in `folder` ("other": files nopeek did not write), or None
    for an absent folder or one holding only names of nopeek's own (`_own_hidden`: a
    `.DS_Store`, `.tmp-` files and write probes, which a command starting at the same moment
    may have left). A user's hidden file (`.git`, `.notes`) makes a folder "other"."""
    if not os.path.isdir(folder) or not [name for name in os.listdir(folder) if not _own_hidden(name)]:
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
    if added is None and replaces and found in LEGACY_NAMES:  # written before the manifest, in place
        added = [name for name in _entries(out)[0] if name not in LEGACY_NAMES[found]]
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
    write_json(os.path.join(tmp, MANIFEST), _entries(tmp)[0])
    if not os.path.exists(out):
        os.rename(tmp, out)
        _list_in_enclosing(out)
        return
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.old-", dir=os.path.dirname(tmp))
    os.rename(out, os.path.join(aside, "old"))
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(os.path.join(aside, "old"), out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    _list_in_enclosing(out)
