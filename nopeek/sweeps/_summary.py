"""What a sweep's rows say over seeds: one row per setting with means and 95% intervals
(`summary.csv`), and the text tables `nopeek sweep` prints."""

from __future__ import annotations

import csv
import io

import numpy as np

from nopeek.core import atomic_write_text
from nopeek.plots import mean_ci
from nopeek.sweeps._results import KEY_COLUMNS


SUMMARY_METRICS = ("accuracy", "dcor", "attack_ssim", "best_ssim", "best_mse", "attack_classifier_accuracy")


def summarize(rows: list[dict]) -> list[dict]:
    """One row per setting (every key but the seed): the number of seeds, and for each metric
    its mean over seeds and the half-width of the 95% t-interval (`*_ci`, 0 for one seed).
    Diverged seeds are counted (`diverged`) but left out of the means."""
    groups: dict = {}
    for r in rows:
        key = tuple(r[c] for c in KEY_COLUMNS if c != "seed")
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        live = [m for m in members if m.get("diverged") != "true"]
        row = dict(zip([c for c in KEY_COLUMNS if c != "seed"], key))
        row.update(seeds=len(members), diverged=len(members) - len(live),
                   collapsed=sum(m.get("collapsed") == "true" for m in live))
        for metric in SUMMARY_METRICS:
            mean, ci = mean_ci([_num(m.get(metric)) for m in live])
            row[metric], row[f"{metric}_ci"] = mean, ci
        out.append(row)
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def write_summary(path: str, rows: list[dict]) -> None:
    """summary.csv: `summarize(rows)`, written atomically."""
    summary = summarize(rows)
    columns = [c for c in KEY_COLUMNS if c != "seed"] + ["seeds", "diverged", "collapsed"]
    columns += [name for m in SUMMARY_METRICS for name in (m, f"{m}_ci")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(path, buf.getvalue())


def format_table(rows: list[dict]) -> str:
    """A compact text table of the results: one line per row (cell and message), or with
    several seeds one line per setting with means and 95% intervals over the seeds."""
    if len({r["seed"] for r in rows}) > 1:
        return format_summary(summarize(rows))
    several = len({(r["topology"], r["party"], r["message"]) for r in rows}) > 1
    head = (f"{'topology':11} {'cut':>5} " if several else f"{'cut':>5} ") + (f"{'message':15} " if several else "")
    head += f"{'defense':8} {'alpha':>6} {'noise':>6} {'seed':>4} {'acc':>6} {'dCor':>6} {'atk SSIM':>8} {'base SSIM':>9} {'best SSIM':>9} {'atk clf':>7}  note"
    lines = [head, "-" * len(head)]

    def num(v, width, digits=3):
        try:
            return f"{float(v):>{width}.{digits}f}"
        except (TypeError, ValueError):
            return f"{'-':>{width}}"

    def order(r):
        return (r["topology"], r["cut"], r["party"], r["message"], r["defense"], float(r["alpha"]), float(r["noise_scale"]), int(r["seed"]))

    for r in sorted(rows, key=order):
        note = ("diverged" if r.get("diverged") == "true" else
                ("collapsed: " + r.get("collapse_reason", "") if r.get("collapsed") == "true" else ""))
        line = (f"{r['topology']:11} {r['cut']:>5} " if several else f"{r['cut']:>5} ")
        line += f"{r['party'] + ':' + r['message']:15} " if several else ""
        line += (f"{r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>6g} {r['seed']:>4} "
                 f"{num(r.get('accuracy'), 6)} {num(r.get('dcor'), 6)} {num(r.get('attack_ssim'), 8)} "
                 f"{num(r.get('baseline_ssim'), 9)} {num(r.get('best_ssim'), 9)} {num(r.get('attack_classifier_accuracy'), 7)}  {note}")
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_summary(summary: list[dict]) -> str:
    """The summary table: mean +- 95% interval over seeds per setting."""
    several = len({(r["topology"], r["party"], r["message"]) for r in summary}) > 1
    head = (f"{'topology':11} {'cut':>5} {'message':15} " if several else f"{'cut':>5} ")
    head += (f"{'defense':8} {'alpha':>6} {'noise':>6} {'seeds':>5} {'acc':>13} {'dCor':>13} {'best SSIM':>13} "
             f"{'atk clf':>13}  note")
    lines = [head, "-" * len(head)]

    def pm(r, m):
        v, ci = r[m], r[f"{m}_ci"]
        return f"{'-':>13}" if not np.isfinite(v) else f"{v:>6.3f}+-{ci:.3f}".rjust(13)

    for r in sorted(summary, key=lambda r: (r["topology"], r["cut"], r["party"], r["message"], r["defense"],
                                            float(r["alpha"]), float(r["noise_scale"]))):
        note = ", ".join(t for t in (f"{r['diverged']} diverged" if r["diverged"] else "",
                                     f"{r['collapsed']} collapsed" if r["collapsed"] else "") if t)
        line = (f"{r['topology']:11} {r['cut']:>5} {r['party'] + ':' + r['message']:15} " if several else f"{r['cut']:>5} ")
        line += (f"{r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>6g} {r['seeds']:>5} "
                 f"{pm(r, 'accuracy')} {pm(r, 'dcor')} {pm(r, 'best_ssim')} {pm(r, 'attack_classifier_accuracy')}  {note}")
        lines.append(line.rstrip())
    return "\n".join(lines)
