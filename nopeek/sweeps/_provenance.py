"""Which sweep a row of results belongs to: every row carries `config_hash`, its config's
digest (`SweepConfig.digest`), and a table holding rows of another config is refused, naming
the file and the fields that differ (from the copy of that config a sharded folder keeps,
`shards/config-HASH.json`, else from the row's own columns). A shard file of another sweep,
copied or left in a folder, is thus never merged as if it were this sweep's.
"""

from __future__ import annotations

import os

from nopeek.core import read_json
from nopeek.errors import ConfigError
from nopeek.sweeps._config import SweepConfig, dict_digest


def config_copy_path(out: str, digest: str) -> str:
    """Where a sharded sweep keeps a copy of each config its shards ran (`shards/config-HASH.json`),
    so a row of another config can be explained field by field."""
    return os.path.join(out, "shards", f"config-{digest}.json")


def _config_of(out: str, digest: str) -> dict | None:
    """The config whose digest is `digest`, read back (`to_dict`, so fields added since it was
    written take their defaults): the copy a sharded folder keeps, else `out`/config.json
    when that file, as written, hashes to `digest`; None where neither does."""
    for path, must_hash in ((config_copy_path(out, digest), False), (os.path.join(out, "config.json"), True)):
        try:
            raw = read_json(path)
            if must_hash and dict_digest(raw) != digest:
                continue
            return SweepConfig.from_dict(raw).to_dict()
        except (OSError, ValueError):
            continue
    return None


def _differences(out: str, digest: str, row: dict, config: SweepConfig) -> tuple[bool, str]:
    """(whether config `digest` is `config` after all, written by another nopeek version (a
    field added since, at its default, changes the digest, not the sweep); what differs): from
    that config's copy in `out` (`_config_of`), else from the row's own columns."""
    other = _config_of(out, digest)
    mine = config.to_dict()
    if other is not None:
        fields = [k for k in sorted(set(mine) | set(other)) if mine.get(k) != other.get(k)]
        return not fields, ", ".join(f"{k} {_show(other.get(k))} there, {_show(mine.get(k))} here" for k in fields[:4])
    fields = [k for k in ("dataset", "model", "epochs", "leakage")
              if row.get(k) not in (None, "") and str(row[k]) != str(mine.get(k))]
    seen = ", ".join(f"{k} {row[k]} there, {mine.get(k)} here" for k in fields)
    return False, (seen + "; " if seen else "") + f"config_hash {digest}, this sweep's {config.digest()}"


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def check_rows(path: str, rows: list[dict], config: SweepConfig, out: str, *, require_hash: bool = False) -> None:
    """Refuse the table `path` of sweep folder `out` if a row was written by another sweep
    config (its `config_hash` is not `config.digest()`), naming the file and what differs.

    Rows without a hash (tables written before the column) pass unless `require_hash` (a
    shard file: nothing else says which sweep it belongs to)."""
    digest, judged = config.digest(), {}
    for row in rows:
        other = row.get("config_hash") or ""
        if other == digest:
            continue
        if not other:
            if not require_hash:
                continue
            raise ConfigError(f"{path}: rows without a config_hash (written by an older nopeek, or by hand) cannot be "
                              "told to belong to this sweep's config; move the file away (its cells are then rerun)")
        if other not in judged:
            judged[other] = _differences(out, other, row, config)
        same, what = judged[other]
        if not same:
            raise ConfigError(f"{path}: rows of another sweep config ({what}); they are never merged into this sweep: "
                              "move the file away, or use another --out")
