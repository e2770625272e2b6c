"""What a sweep's rows say over seeds: one row per setting with means and 95% intervals
(`summary.csv`), and the text tables `nopeek sweep` prints."""

from __future__ import annotations

import csv
import io

import numpy as np

from nopeek.core import atomic_write_text
from nopeek.plots import mean_ci
from nopeek.sweeps._results import KEY_COLUMNS


SUMMARY_METRICS = ("accuracy", "dcor", "dcor_u", "dcor_null95", "dcor_pvalue", "dcor_label", "pdcor_label",
                   "attack_ssim", "best_ssim", "best_mse", "class_mean_ssim", "beyond_label_ssim",
                   "attack_classifier_accuracy", "class_mean_classifier_accuracy", "val_accuracy", "val_dcor")


def summarize(rows: list[dict]) -> list[dict]:
    """One row per setting (every key but the seed): the number of seeds, and for each metric
    its mean over seeds and the half-width of the 95% t-interval (`*_ci`, 0 for one seed).
    Diverged and collapsed seeds are counted (`diverged`, `collapsed`: "collapsed 1 of 5")
    and left out of the means, unless every live seed collapsed (then the means are theirs
    and `all_collapsed` is true): a mean of a collapsed and a working model is no model's."""
    groups: dict = {}
    for r in rows:
        key = tuple(r[c] for c in KEY_COLUMNS if c != "seed")
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        live = [m for m in members if m.get("diverged") != "true"]
        working = [m for m in live if m.get("collapsed") != "true"]
        row = dict(zip([c for c in KEY_COLUMNS if c != "seed"], key))
        row.update(seeds=len(members), diverged=len(members) - len(live), collapsed=len(live) - len(working),
                   all_collapsed=bool(live) and not working,
                   collapsed_seeds=" ".join(m["seed"] for m in live if m.get("collapsed") == "true"))
        for metric in SUMMARY_METRICS:
            mean, ci = mean_ci([_num(m.get(metric)) for m in (working or live)])
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
    columns = [c for c in KEY_COLUMNS if c != "seed"] + ["seeds", "diverged", "collapsed", "all_collapsed",
                                                          "collapsed_seeds"]
    columns += [name for m in SUMMARY_METRICS for name in (m, f"{m}_ci")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(path, buf.getvalue())


def _num_text(v, width, digits=3) -> str:
    try:
        value = float(v)
    except (TypeError, ValueError):
        return f"{'-':>{width}}"
    return f"{'-':>{width}}" if not np.isfinite(value) else f"{value:>{width}.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """A compact text table of the results: one line per row (cell and message), or with
    several seeds one line per setting with means and 95% intervals over the seeds. Each dCor
    is shown with its reading: the permutation null's 95% quantile and the partial dCor
    given the label; the decoder's SSIM with its margin over the class-mean image; the
    classifier's reading on reconstructions beside its reading of the class-mean images (what
    the label alone gives)."""
    if len({r["seed"] for r in rows}) > 1:
        return format_summary(summarize(rows))
    several = len({(r["topology"], r["party"], r["message"]) for r in rows}) > 1
    head = (f"{'topology':11} {'cut':>5} " if several else f"{'cut':>5} ") + (f"{'message':15} " if several else "")
    head += (f"{'defense':8} {'strength':>8} {'seed':>4} {'acc':>6} {'dCor':>6} {'null95':>6} {'pdCor|y':>7} "
             f"{'best SSIM':>9} {'>label':>6} {'atk clf':>7} {'lbl clf':>7}  note")
    lines = [head, "-" * len(head)]

    def order(r):
        return (r["topology"], r["cut"], r["party"], r["message"], r["defense"], float(r["strength"]), int(r["seed"]))

    for r in sorted(rows, key=order):
        note = ("diverged" if r.get("diverged") == "true" else
                ("collapsed: " + r.get("collapse_reason", "") if r.get("collapsed") == "true" else ""))
        line = (f"{r['topology']:11} {r['cut']:>5} " if several else f"{r['cut']:>5} ")
        line += f"{r['party'] + ':' + r['message']:15} " if several else ""
        line += (f"{r['defense']:8} {float(r['strength']):>8g} {r['seed']:>4} {_num_text(r.get('accuracy'), 6)} "
                 f"{_num_text(r.get('dcor'), 6)} {_num_text(r.get('dcor_null95'), 6)} {_num_text(r.get('pdcor_label'), 7)} "
                 f"{_num_text(r.get('best_ssim'), 9)} {_num_text(r.get('beyond_label_ssim'), 6)} "
                 f"{_num_text(r.get('attack_classifier_accuracy'), 7)} "
                 f"{_num_text(r.get('class_mean_classifier_accuracy'), 7)}  {note}")
        lines.append(line.rstrip())
    lines.append("null95: dCor of independent samples at this n (95%); pdCor|y: partial dCor given the label; "
                 ">label: SSIM beyond the class-mean image; atk clf / lbl clf: a clean classifier on the "
                 "reconstructions / on the class-mean images (the label alone)")
    return "\n".join(lines)


def format_summary(summary: list[dict]) -> str:
    """The summary table: mean +- 95% interval over the seeds that did not collapse, per setting."""
    several = len({(r["topology"], r["party"], r["message"]) for r in summary}) > 1
    head = (f"{'topology':11} {'cut':>5} {'message':15} " if several else f"{'cut':>5} ")
    head += (f"{'defense':8} {'strength':>8} {'seeds':>5} {'acc':>13} {'dCor':>13} {'null95':>6} {'pdCor|y':>7} "
             f"{'best SSIM':>13} {'atk clf':>13} {'lbl clf':>7}  note")
    lines = [head, "-" * len(head)]

    def pm(r, m):
        v, ci = r[m], r[f"{m}_ci"]
        return f"{'-':>13}" if not np.isfinite(v) else f"{v:>6.3f}+-{ci:.3f}".rjust(13)

    for r in sorted(summary, key=lambda r: (r["topology"], r["cut"], r["party"], r["message"], r["defense"],
                                            float(r["strength"]))):
        live = r["seeds"] - r["diverged"]
        note = ", ".join(t for t in (f"{r['diverged']} diverged" if r["diverged"] else "",
                                     (f"collapsed {r['collapsed']} of {live} (seed {r['collapsed_seeds']})"
                                      + ("; means over the collapsed" if r["all_collapsed"] else ""))
                                     if r["collapsed"] else "") if t)
        line = (f"{r['topology']:11} {r['cut']:>5} {r['party'] + ':' + r['message']:15} " if several else f"{r['cut']:>5} ")
        line += (f"{r['defense']:8} {float(r['strength']):>8g} {r['seeds']:>5} {pm(r, 'accuracy')} {pm(r, 'dcor')} "
                 f"{_num_text(r['dcor_null95'], 6)} {_num_text(r['pdcor_label'], 7)} {pm(r, 'best_ssim')} "
                 f"{pm(r, 'attack_classifier_accuracy')} {_num_text(r.get('class_mean_classifier_accuracy'), 7)}  {note}")
        lines.append(line.rstrip())
    lines.append("null95: dCor of independent samples at this n (95%); pdCor|y: partial dCor given the label; "
                 "atk clf / lbl clf: a clean classifier on the reconstructions / on the class-mean images (the "
                 "label alone)")
    return "\n".join(lines)
