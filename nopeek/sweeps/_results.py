"""The results table of a sweep: its columns, reading it back, adding rows atomically.

One row per (cell, message): a cell is (dataset, model, topology, cut, defense, strength,
alpha, noise_scale, seed); a topology with several attacked messages (vertical's clients,
multi_hop's hops, round robin's clients) has one row per message, told apart by `party`
and `message`. Attacks beyond the table's own columns add columns of their own
(`NAME_mse`, `NAME_baseline_mse`, ...), placed before the sample files. Rows are added by writing the whole table to a temporary file and
renaming it over the old one, so a reader sees the old table or the new one, never half.
A row that is truncated or malformed does not count as done: its cell runs again.
Tables written before the engine (no `topology`, `party`, `message` columns) read as
vanilla with the client's message `z`; tables written before the defence registry (no
`strength`) take it from `alpha` or `noise_scale` (where label defences kept theirs).
"""

from __future__ import annotations

import csv
import io
import math
import os

from nopeek.core import atomic_write_text
from nopeek.defences import DEFENCES
from nopeek.protocol import DEFAULT_TOPOLOGY

# The label attack's and a dishonest server's columns (nopeek.sweeps._columns).
DISHONEST_COLUMNS = [
    "label_norm_auc", "label_direction_auc", "label_leak_null95", "fsha_mse", "fsha_psnr", "fsha_ssim", "fsha_classifier_accuracy",
    "fsha_baseline_mse", "fsha_baseline_psnr", "fsha_baseline_ssim", "fsha_baseline_classifier_accuracy",
    "fsha_class_mean_mse", "fsha_class_mean_ssim", "fsha_client_dcor", "fsha_client_dcor_null95", "fsha_client_pdcor_label",
    "fsha_task_probe_accuracy", "fsha_task_probe_chance", "fsha_steps",
]
# The (epsilon, delta) of a defence that claims one, and what it covers; empty otherwise.
PRIVACY_COLUMNS = ["dp_epsilon", "dp_epsilon_epoch", "dp_delta", "dp_covers"]
CELL_COLUMNS = ["dataset", "model", "topology", "cut", "defense", "strength", "alpha", "noise_scale", "seed"]
KEY_COLUMNS = CELL_COLUMNS + ["party", "message"]
SCORE_COLUMNS = [
    "attack_mse", "attack_psnr", "attack_ssim", "attack_dcor", "attack_classifier_accuracy",
    "baseline_mse", "baseline_psnr", "baseline_ssim", "baseline_dcor", "baseline_classifier_accuracy",
    "best_mse", "best_psnr", "best_ssim", "best_dcor", "best_classifier_accuracy",
]
READING_COLUMNS = ["dcor_u", "dcor_null95", "dcor_pvalue", "dcor_label", "pdcor_label"]
LABEL_BASELINE_COLUMNS = [*(f"class_mean_{k}" for k in ("mse", "psnr", "ssim", "dcor", "classifier_accuracy")),
                          "beyond_label_ssim", "beyond_label_mse"]
RESULT_COLUMNS = KEY_COLUMNS + [
    "accuracy", "task_accuracies", "dcor", *READING_COLUMNS, "val_accuracy", "val_dcor", *SCORE_COLUMNS, *LABEL_BASELINE_COLUMNS,
    "classifier_clean_accuracy", "collapsed", "collapse_reason", "diverged", "diverged_epoch",
    "cut_block", "cut_bytes_per_sample", "leakage", "epochs", "group_size", "acts_on",
    *PRIVACY_COLUMNS,  # a defence's differential-privacy guarantee (nopeek.defences.dp_guarantee)
    *DISHONEST_COLUMNS,  # label AUCs and FSHA scores (nopeek.sweeps._columns)
    "config_hash",  # SweepConfig.digest() of the sweep that wrote the row
    "train_seconds", "attack_seconds", "eval_seconds", "samples_file", "originals_file",
]
OLD_DEFAULTS = {"topology": DEFAULT_TOPOLOGY, "party": "client", "message": "z", "diverged": "false", "collapsed": "false",
                "originals_file": "originals.npy"}
TIMING_COLUMNS = ("train_seconds", "attack_seconds", "eval_seconds")


def fmt_number(v: float) -> str:
    """How a grid value is written in a key column: repr of the float (0.5 -> '0.5')."""
    return repr(float(v))


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def is_valid(row: dict) -> bool:
    """A complete row: every key column filled, numbers where numbers belong, and either an
    accuracy or a diverged flag. A truncated line (missing trailing fields) fails this."""
    if any(row.get(c) in (None, "") for c in KEY_COLUMNS):
        return False
    if not all(_is_number(row[c]) for c in ("strength", "alpha", "noise_scale", "seed")):
        return False
    for column in ("samples_file", "originals_file"):  # the last columns: a cut-short line fails here
        value = row.get(column)
        if value is None or (value != "" and not value.endswith(".npy")):
            return False
    if row.get("diverged") == "true":
        return True
    return _is_number(row.get("accuracy")) and _is_number(row.get("dcor"))


def cell_key(row: dict) -> tuple:
    return tuple(row[c] for c in CELL_COLUMNS)


def row_key(row: dict) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS)


def read_rows(path: str, *, valid_only: bool = True) -> list[dict]:
    """The rows of a results table (old tables filled with their defaults); [] if absent.

    With `valid_only`, malformed rows are left out (their cells count as not done)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = set(reader.fieldnames or ())
    missing = {c: d for c, d in OLD_DEFAULTS.items() if c not in header}  # an older table's columns
    for r in rows:
        r.update(missing)
        if r.get("strength") in (None, ""):  # written before the column, or by hand without it
            _add_strength(r)
        if r.get("acts_on") in (None, "") and r.get("defense") in DEFENCES:
            r["acts_on"] = DEFENCES[r["defense"]].acts_on
    return [r for r in rows if is_valid(r)] if valid_only else rows


def _add_strength(row: dict) -> None:
    """A row written before the `strength` column: NoPeek's alpha, the noise's scale, or
    (label defences) the strength they kept in `noise_scale`."""
    defense = row.get("defense", "")
    if defense == "nopeek":
        row["strength"] = row.get("alpha", "")
    elif defense == "none":
        row["strength"] = "0.0"
    else:
        row["strength"] = row.get("noise_scale", "")
        if defense != "noise":
            row["noise_scale"] = "0.0"


def columns(rows: list[dict]) -> list[str]:
    """The table's columns: `RESULT_COLUMNS`, with any other column the rows hold (an extra
    attack's) placed before the sample files, sorted."""
    extra = sorted({k for r in rows for k in r} - set(RESULT_COLUMNS))
    return RESULT_COLUMNS[:-2] + extra + RESULT_COLUMNS[-2:]


def write_rows(path: str, rows: list[dict]) -> None:
    """Replace the table with `rows` in one atomic rename."""
    fields = columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in fields})
    atomic_write_text(path, buf.getvalue())


def _cell(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isnan(v):
        return ""
    return v


def append_rows(path: str, rows: list[dict]) -> None:
    """Add rows: keep the table's valid rows except those of the cells being written, add the new."""
    new_cells = {cell_key(r) for r in rows}
    kept = [r for r in read_rows(path) if cell_key(r) not in new_cells]
    write_rows(path, kept + rows)


def f(v) -> float:
    """A table value as a float; NaN for empty or non-numeric."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
