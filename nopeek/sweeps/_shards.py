"""Sharded sweeps: N independent processes (a Slurm array, a Kubernetes indexed job) each
run their share of a sweep's groups into one shared folder; `merge` joins their rows.

The unit is a group (one topology at one cut list, every defence and seed trained as one
stack), so a shard's rows are exactly the local sweep's. Shard I of N runs the groups at
positions I, I + N, I + 2N, ... of `SweepConfig.groups()` (every group has the same
number of cells, so round robin is also balanced by cells: counts differ by at most one).

    DIR/config.json                  the SweepConfig; the first shard creates it atomically,
                                     the others compare (a different config is refused)
    DIR/shards/plan.json             {"shards": N}; a different N is refused unless `force`
    DIR/shards/results-I-of-N.csv    shard I's rows: same columns, atomic append and validity
                                     rules as results.csv (`nopeek.results`); each row carries
                                     its config's hash (`config_hash`)
    DIR/shards/config-HASH.json      a copy of each config a shard ran here, so a row of
                                     another config is explained field by field
    DIR/samples/                     shared: sample files are named per cell and message
    DIR/results.csv, DIR/figures/    the merge

A cell counts as done when any shard file or results.csv holds a valid row of it, so a
killed shard reruns its missing cells only, and a shard never reruns a cell another
shard (or an earlier local run, or a plan with another N) finished. The merge is the union
of results.csv and every shard file, one source per cell (results.csv first, then shard
files in order), rows in the local sweep's order; it is written in one atomic rename and
its figures are drawn aside and renamed in, so shards that finish together and all merge
write the same bytes, and a reader sees a whole table. Each shard merges at its end when
the union holds every cell; `nopeek sweep --merge-shards DIR` merges (and reports what is
missing) at any time.

A row whose `config_hash` is not this sweep's (a shard file of another config, copied or
left in the folder) is never merged: every shard and `--merge-shards` refuse the folder,
naming the file and the fields that differ, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
import uuid

from tqdm.auto import tqdm

from nopeek.core import check_output_folder, check_writable, make_output_folder, read_json, write_json
from nopeek.errors import ConfigError
from nopeek.report import write_report
from nopeek.sweeps._config import SweepConfig, cells
from nopeek.sweeps._results import append_rows, cell_key, read_rows, write_rows
from nopeek.sweeps._provenance import check_rows, config_copy_path
from nopeek.sweeps._sweep import load_inputs, resume_folder_of, run_group
from nopeek.sweeps._ranking import write_ranking

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
_SHARD_FILE = re.compile(r"^results-(\d+)-of-(\d+)\.csv$")


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N), 0 <= I < N (I is 0-based, like $SLURM_ARRAY_TASK_ID of --array=0-(N-1))."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 3/8, I = $SLURM_ARRAY_TASK_ID), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_groups(config: SweepConfig, index: int, count: int) -> list[tuple[str, str]]:
    """The (topology, cut spec) groups of shard `index` of `count`: round robin over `groups()`."""
    return config.groups()[index::count]


def shard_path(out: str, index: int, count: int) -> str:
    return os.path.join(out, SHARDS_DIR, f"results-{index}-of-{count}.csv")


def shard_files(out: str) -> list[str]:
    """Every shard file in `out`, ordered by (N, I)."""
    folder = os.path.join(out, SHARDS_DIR)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        match = _SHARD_FILE.match(name)
        if match:
            found.append(((int(match.group(2)), int(match.group(1))), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


# ---- the shared folder --------------------------------------------------------------


def _create_json(path: str, obj) -> bool:
    """Create `path` holding `obj` unless it exists: True if this call created it. Atomic even
    when N processes try at once: a whole private file is hard-linked into place (a link
    fails if the name exists), so the name appears complete or not at all."""
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex}.tmp"
    write_json(tmp, obj)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive create, then the content
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh, open(tmp, "rb") as src:
            fh.write(src.read())
        return True
    finally:
        os.unlink(tmp)


def _read_json(path: str, tries: int = 20):
    """read_json, waiting a moment for a file another process is still filling (see above)."""
    for _ in range(tries - 1):
        try:
            return read_json(path)
        except ValueError:
            time.sleep(0.1)
    return read_json(path)


def _check_config(out: str, config: SweepConfig) -> None:
    """Create DIR/config.json, or refuse if it holds another config (never discarded here:
    the other shards may be using the results)."""
    if not _create_json(os.path.join(out, "config.json"), config.to_dict()):
        _compare_config(out, config)


def _compare_config(out: str, config: SweepConfig) -> None:
    """Refuse DIR/config.json if it holds another config; read only (nothing if absent)."""
    path = os.path.join(out, "config.json")
    new = config.to_dict()
    if not os.path.exists(path):
        return
    try:
        old = SweepConfig.from_dict(_read_json(path)).to_dict()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable ({err}); use another --out") from None
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ConfigError(f"{out} holds results of a different sweep config (changed: {', '.join(changed)}); "
                          "a shard never discards results (other shards may share them): use another --out, "
                          "or remove the folder first")


def _check_plan(out: str, count: int, force: bool) -> None:
    """Create DIR/shards/plan.json, or check that it plans `count` shards (else refuse unless
    `force`, which re-plans: finished cells of the old shard files still count)."""
    path = os.path.join(out, SHARDS_DIR, PLAN_FILE)
    if _create_json(path, {"shards": count}):
        return
    try:
        old = _read_json(path).get("shards")
    except (OSError, ValueError, AttributeError):
        old = None
    if old != count:
        if not force:
            raise ConfigError(f"{out} is run as {old} shards ({SHARDS_DIR}/{PLAN_FILE}); --shard I/{count} would "
                              f"split the groups differently: give N = {old}, or --force to re-plan as {count} "
                              "shards (finished cells are kept)")
        write_json(path, {"shards": count})


def prepare_shard_output(out: str, config: SweepConfig, count: int, force: bool = False) -> None:
    """Create or check the shared folder for a shard of `count` (safe when all shards start at
    once; a folder holding anything but a sweep is refused, `check_writable`)."""
    check_writable(out, ("sweep",), force=force, replaces=False)
    make_output_folder(out)
    os.makedirs(os.path.join(out, SHARDS_DIR), exist_ok=True)
    _check_config(out, config)
    _check_plan(out, count, force)
    _create_json(config_copy_path(out, config.digest()), config.to_dict())  # explains this config's rows elsewhere
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)


# ---- merging --------------------------------------------------------------------------


@dataclasses.dataclass
class MergeStatus:
    """The union of a sweep folder's tables against its config's cells."""

    rows: list[dict]  # one source per cell, in the local sweep's order
    n_cells: int
    n_done: int
    missing: list[tuple[str, str, int]]  # (topology, cut spec, cells missing) per unfinished group
    sources: list[str]  # the tables read
    merged: bool = False  # results.csv (and the figures) were written

    @property
    def complete(self) -> bool:
        return not self.missing


def order_rows(rows: list[dict], config: SweepConfig) -> list[dict]:
    """Rows in the local sweep's order (the config's cell order; a cell's rows as they were)."""
    position = {c.key(config): i for i, c in enumerate(cells(config))}
    return sorted(rows, key=lambda r: position.get(cell_key(r), len(position)))


def collect(out: str, config: SweepConfig) -> MergeStatus:
    """Read results.csv and every shard file of `out`; nothing is written.

    Raises:
      ConfigError: a table holds rows of another sweep config (`check_rows`; a shard file's
        rows must carry this config's hash), naming the file and what differs.
    """
    results = os.path.join(out, "results.csv")
    sources = [p for p in [results, *shard_files(out)] if os.path.exists(p)]
    by_cell: dict[tuple, list[dict]] = {}
    for path in sources:
        fresh: dict[tuple, list[dict]] = {}
        rows = read_rows(path)
        check_rows(path, rows, config, out, require_hash=path != results)
        for row in rows:
            if cell_key(row) not in by_cell:
                fresh.setdefault(cell_key(row), []).append(row)
        by_cell.update(fresh)
    rows = order_rows([r for group in by_cell.values() for r in group], config)
    all_cells = cells(config)
    missing: dict[tuple[str, str], int] = {}
    for c in all_cells:
        if c.key(config) not in by_cell:
            missing[(c.topology, c.cut)] = missing.get((c.topology, c.cut), 0) + 1
    return MergeStatus(rows, len(all_cells), len(all_cells) - sum(missing.values()),
                       [(t, s, n) for (t, s), n in missing.items()], sources)


def read_config(out: str) -> SweepConfig:
    """The SweepConfig of a sweep folder (type-checked, not validated: no data is needed)."""
    path = os.path.join(out, "config.json")
    if not os.path.isdir(out):
        raise ConfigError(f"--merge-shards {out}: not a folder")
    if not os.path.exists(path):
        raise ConfigError(f"--merge-shards {out}: no config.json (not a sweep folder)")
    try:
        return SweepConfig.from_dict(read_json(path))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None


def merge(out: str, config: SweepConfig | None = None, *, figures: bool = True) -> MergeStatus:
    """Write the union of `out`'s tables to results.csv (one atomic rename) and draw the
    figures from it, whether or not every cell is there; return what was merged and missed.

    Idempotent: merges of the same tables write the same bytes, so shards finishing
    together may all merge."""
    config = config if config is not None else read_config(out)
    status = collect(out, config)
    if status.rows:
        write_rows(os.path.join(out, "results.csv"), status.rows)
        if figures:
            _draw_figures(out, status.rows)
            write_report(out)
        status.merged = True
    if status.complete:  # every cell is in: no shard has training left to resume
        shutil.rmtree(resume_folder_of(out), ignore_errors=True)
    return status


def _draw_figures(out: str, rows: list[dict]) -> None:
    """Draw into a private folder, then rename each figure into DIR/figures: two merging
    processes never write one file at once."""
    from nopeek.plots import sweep_figures

    final = os.path.join(out, "figures")
    os.makedirs(final, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".figures-", dir=out)
    try:
        for path in sweep_figures(rows, tmp, samples_dir=os.path.join(out, "samples")):
            os.replace(path, os.path.join(final, os.path.basename(path)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_ranking(rows, out)  # written atomically, file by file


def describe_missing(status: MergeStatus, config: SweepConfig, count: int | None = None) -> list[str]:
    """One line per unfinished group, naming the shard that runs it when the plan is known."""
    groups = config.groups()
    lines = []
    for topology, spec, n in status.missing:
        owner = f" (shard {groups.index((topology, spec)) % count}/{count})" if count else ""
        lines.append(f"missing: {topology} cut {spec}: {n} cell(s){owner}")
    return lines


def merge_report(status: MergeStatus, out: str, config: SweepConfig) -> str:
    """What `nopeek sweep --merge-shards DIR` prints: cells found, where they went, each unfinished group."""
    head = f"{out}: {status.n_done} of {status.n_cells} cells from {len(status.sources)} table(s)"
    if status.merged:
        head += f", merged into {out}/results.csv; figures in {out}/figures/"
    return "\n".join([head, *describe_missing(status, config, planned_shards(out))])


def planned_shards(out: str) -> int | None:
    """N of DIR/shards/plan.json, or None."""
    try:
        return int(read_json(os.path.join(out, SHARDS_DIR, PLAN_FILE))["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- running a shard ------------------------------------------------------------------


@dataclasses.dataclass
class ShardResult:
    index: int
    count: int
    groups: list[tuple[str, str]]  # this shard's groups
    ran: int  # cells this run trained (the others were done already)
    rows: list[dict]  # this shard's rows (of its groups, from any source)
    status: MergeStatus  # the folder after this shard: merged when complete

    def report(self, out: str, config: SweepConfig) -> str:
        """What the shard did and where the sweep stands (the missing groups, until merged)."""
        groups = ", ".join(f"{t} cut {s}" for t, s in self.groups) or "none (more shards than groups)"
        lines = [f"shard {self.index}/{self.count} ({groups}): ran {self.ran} cell(s); "
                 f"the sweep has {self.status.n_done} of {self.status.n_cells} cells"]
        if self.status.merged:
            lines.append(f"all shards done: merged {len(self.status.rows)} rows into {out}/results.csv; "
                         f"figures in {out}/figures/")
        else:
            lines += describe_missing(self.status, config, self.count)
            lines.append(f"the last shard to finish merges them (or at any time: nopeek sweep --merge-shards {out})")
        return "\n".join(lines)


def run_shard(config: SweepConfig, out: str, index: int, count: int, *, force: bool = False, progress: bool = True,
              log=print) -> ShardResult:
    """Run the missing cells of shard `index` of `count` into `out` (shared with the other
    shards), then merge if every shard's cells are there.

    `force` re-plans a folder run with another N (finished cells are kept); a different
    config is always refused."""
    check_output_folder(out)
    inputs = load_inputs(config)  # a failed start writes nothing
    _compare_config(out, config)
    collect(out, config)  # rows of another config refused before anything is written
    prepare_shard_output(out, config, count, force)
    mine = shard_groups(config, index, count)
    path = shard_path(out, index, count)
    before = collect(out, config)
    done = {cell_key(r) for r in before.rows}
    my_cells = [c for c in cells(config) if (c.topology, c.cut) in mine]
    todo = [c for c in my_cells if c.key(config) not in done]
    samples_dir = os.path.join(out, "samples")
    bar = tqdm(total=len(my_cells), initial=len(my_cells) - len(todo), desc=f"shard {index}/{count} cells",
               unit="cell", disable=not progress)
    for topology, spec in mine:
        group = [c for c in todo if (c.topology, c.cut) == (topology, spec)]
        if not group:
            continue
        bar.set_postfix_str(f"{topology} cut {spec}: training {len(group)} models as one stack")
        run_group(inputs, group, samples_dir, progress=progress, log=log, resume_dir=resume_folder_of(out),
                  keep=lambda rows, stack: (append_rows(path, rows), bar.update(len(stack))))
    bar.close()
    try:
        os.rmdir(resume_folder_of(out))  # when no other shard is training
    except OSError:
        pass
    status = collect(out, config)
    if status.complete:  # the last shard to finish sees every cell (each appends before it looks)
        status = merge(out, config)
    mine_rows = [r for r in status.rows if (r["topology"], r["cut"]) in mine]
    return ShardResult(index, count, mine, len(todo), mine_rows, status)


__all__ = ["MergeStatus", "ShardResult", "collect", "describe_missing", "merge", "merge_report", "order_rows",
           "parse_shard", "planned_shards", "prepare_shard_output", "read_config", "run_shard", "shard_files",
           "shard_groups", "shard_path"]
