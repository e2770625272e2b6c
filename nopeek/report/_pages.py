"""`nopeek report DIR`: one self-contained HTML page for any folder nopeek writes.

- a sweep (`results.csv`): the results table, sortable by any column and filterable by
  topology, cut, defence and message, collapsed and diverged cells marked, each row's
  reconstructions under its originals, the defences' ranking at matched utility (where the
  sweep compares several), the figures, the config and the timings;
- a training run (`metrics.json`): history curves, the transcript of one step, the leakage
  of every message with its readings, the config;
- an audit (`scores.json` with `targets`) and a cost report (`cost.csv`): their tables and figures.

The page is `DIR/report.html`, written atomically; images are embedded, so the file alone
is the report (no server, no network, nothing fetched).
"""

from __future__ import annotations

import csv
import glob
import os
import time

import numpy as np

from nopeek.core import atomic_write_text, folder_kind, list_in_manifest, read_json
from nopeek.errors import ConfigError
from nopeek.report._html import (
    details, esc, figure_png, figures, number, page, samples_png, section, simple_table,
)

REPORT = "report.html"
# The sweep table's columns: (column, heading); others of the rows (extra attacks') follow.
SWEEP_COLUMNS = [
    ("accuracy", "acc"), ("dcor", "dCor"), ("dcor_null95", "null 95%"), ("dcor_pvalue", "p"), ("dcor_u", "dCor_u^2"),
    ("dcor_label", "dCor(x,y)"), ("pdcor_label", "pdCor|y"), ("val_accuracy", "val acc"), ("val_dcor", "val dCor"),
    ("best_ssim", "best SSIM"), ("baseline_ssim", "mean img SSIM"), ("class_mean_ssim", "class-mean SSIM"),
    ("beyond_label_ssim", "SSIM beyond label"), ("best_mse", "best MSE"), ("attack_classifier_accuracy", "clf on x_hat"),
    ("class_mean_classifier_accuracy", "clf on class mean"), ("label_norm_auc", "label norm AUC"),
    ("label_direction_auc", "label dir AUC"), ("label_leak_null95", "label null"), ("fsha_mse", "FSHA MSE"),
    ("fsha_baseline_mse", "FSHA mean img MSE"), ("fsha_class_mean_mse", "FSHA class-mean MSE"),
    ("fsha_client_dcor", "FSHA client dCor"), ("fsha_client_dcor_null95", "FSHA client null"),
]
KEY_TEXT = ["topology", "cut", "defense", "strength", "seed"]
KEY_COLUMNS = ["dataset", "model", "topology", "cut", "defense", "strength", "alpha", "noise_scale", "seed", "party",
               "message"]


#: The columns of a sweep's results.csv and a cost.csv that the pages read.
RESULTS_NEEDED = ("topology", "cut", "defense", "seed", "party", "message", "originals_file", "accuracy", "dcor")
COST_NEEDED = ("method", "model", "dataset", "clients", "client_tflops", "client_gb")


def _read_csv(path: str, needed: tuple[str, ...], what: str) -> list[dict]:
    """The rows of the CSV file `path`, refused (ConfigError naming it) where it is not text or
    lacks one of the `needed` columns (`what`: the file a user should have given)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not text ({err.reason} at byte {err.start}); is this {what}?") from None
    missing = [c for c in needed if c not in header]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; is this {what}?")
    return rows


def read_results(path: str) -> list[dict]:
    """The complete rows of a sweep's results.csv, as written (a row cut short is left out).

    Raises:
      ConfigError: not text, or not a sweep's columns."""
    return _complete(_read_csv(path, RESULTS_NEEDED, "a `nopeek sweep` results.csv"))


def _complete(rows: list[dict]) -> list[dict]:
    """The rows with every key field written (a row cut short lacks its last ones)."""
    return [r for r in rows if all(r.get(c) not in (None, "") for c in ("topology", "cut", "defense", "seed", "party",
                                                                          "message", "originals_file"))]


def kind_of(folder: str) -> str:
    """"sweep", "run", "audit", "cost" or "attack" (an FSHA run's scores included): what nopeek
    wrote in `folder` (`nopeek.core.folder_kind`), its main file checked to be a JSON object."""
    kind = folder_kind(folder)
    if kind in (None, "other"):
        raise ConfigError(f"{folder}: no results.csv, metrics.json, scores.json or cost.csv; not a folder nopeek wrote")
    if kind == "sweep" and not os.path.isfile(os.path.join(folder, "results.csv")):
        raise ConfigError(f"{folder}: a sweep with no finished group yet (no results.csv); run the same `nopeek sweep` "
                          "again to resume it")
    if kind == "sweep" and not read_results(os.path.join(folder, "results.csv")):
        raise ConfigError(f"{os.path.join(folder, 'results.csv')}: no complete rows to report")
    if kind == "cost" and not _read_csv(os.path.join(folder, "cost.csv"), COST_NEEDED, "a `nopeek cost` cost.csv"):
        raise ConfigError(f"{os.path.join(folder, 'cost.csv')}: no rows to report")
    main = {"run": "metrics.json", "audit": "scores.json", "attack": "scores.json", "fsha": "scores.json"}.get(kind)
    # the main file and the config beside it are nopeek's JSON objects (a run's metrics with its test accuracy)
    for name in (main, "config.json") if main else ("config.json",):
        path = os.path.join(folder, name)
        if name == main or os.path.isfile(path):
            data = read_json(path)
            if not isinstance(data, dict) or (kind == "run" and name == main and "test_accuracy" not in data):
                raise ConfigError(f"{path}: not the object nopeek writes; write it again with the command that made it")
    return "attack" if kind == "fsha" else kind


def write_report(folder: str) -> str:
    """Write `folder/report.html` for whatever nopeek wrote there; return its path."""
    if not os.path.isdir(folder):
        raise ConfigError(f"{folder}: not a folder")
    build = {"sweep": sweep_page, "run": run_page, "audit": audit_page, "cost": cost_page, "attack": attack_page}
    html = build[kind_of(folder)](folder)
    path = os.path.join(folder, REPORT)
    atomic_write_text(path, html)
    list_in_manifest(folder, REPORT)  # replaced with the folder by the command's --force
    return path


def _subtitle(folder: str, what: str) -> str:
    return f"{esc(what)}: {esc(os.path.abspath(folder))}; report written {time.strftime('%Y-%m-%d %H:%M')}"


# ---- a sweep -----------------------------------------------------------------------------------


def _row_key(r: dict) -> str:
    return "|".join(str(r.get(c, "")) for c in KEY_COLUMNS)


def _load(path: str):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def sweep_page(folder: str) -> str:
    written = _read_csv(os.path.join(folder, "results.csv"), RESULTS_NEEDED, "a `nopeek sweep` results.csv")
    rows = _complete(written)
    left_out = len(written) - len(rows)
    samples = os.path.join(folder, "samples")
    present = [c for c, _ in SWEEP_COLUMNS if any(r.get(c) not in (None, "") for r in rows)]
    known = {c for c, _ in SWEEP_COLUMNS}
    extra = sorted(c for c in {k for r in rows for k in r} if c.endswith(("_best_ssim", "_beyond_label_ssim"))
                   and c not in known and any(r.get(c) not in (None, "") for r in rows))
    columns = [(c, h) for c, h in SWEEP_COLUMNS if c in present] + [(c, c) for c in extra]
    head = ["message"] + KEY_TEXT + ["reconstructions", "note"] + [h for _, h in columns]
    numeric = {i for i, h in enumerate(head) if h in ("strength", "seed")} | set(range(len(KEY_TEXT) + 3, len(head)))
    th = "".join(
        f"<th class=\"{'text' if i < 4 else ''}\" onclick=\"sortTable(this.closest('table'), {i}, {str(i in numeric).lower()})\">"
        f"{esc(h)}</th>" for i, h in enumerate(head))
    body = []
    for r in sorted(rows, key=lambda r: (r["topology"], r["cut"], r["party"], r["message"], r["defense"],
                                         float(r.get("strength") or 0), int(r["seed"]))):
        state = "diverged" if r.get("diverged") == "true" else "collapsed" if r.get("collapsed") == "true" else ""
        note = {"diverged": f"<span class=\"tag diverged\">diverged at epoch {esc(r.get('diverged_epoch'))}</span>",
                "collapsed": f"<span class=\"tag collapsed\">collapsed: {esc(r.get('collapse_reason'))}</span>"}.get(state, "")
        message = f"{r['party']}:{r['message']}"
        thumb = ""
        if r.get("samples_file") and os.path.isdir(samples):
            originals = _load(os.path.join(samples, r.get("originals_file") or "originals.npy"))
            recon = _load(os.path.join(samples, r["samples_file"]))
            if originals is not None and recon is not None:
                thumb = f"<img class=\"thumb\" alt=\"reconstructions\" src=\"{samples_png(originals, recon)}\">"
        cells = [f"<td class=\"text\">{esc(message)}</td>"]
        cells += [f"<td class=\"text\" data-col=\"{c}\" data-v=\"{esc(r.get(c, ''))}\">{esc(r.get(c, ''))}</td>"
                  for c in KEY_TEXT]
        cells += [f"<td>{thumb}</td>", f"<td class=\"text\">{note}</td>"]
        cells += [f"<td data-col=\"{esc(c)}\" data-v=\"{esc(r.get(c, ''))}\">{number(r.get(c))}</td>" for c, _ in columns]
        body.append(f"<tr class=\"{state}\" data-key=\"{esc(_row_key(r))}\" data-topology=\"{esc(r['topology'])}\" "
                    f"data-cut=\"{esc(r['cut'])}\" data-defense=\"{esc(r['defense'])}\" data-message=\"{esc(message)}\">"
                    + "".join(cells) + "</tr>")
    filters = []
    for name, values in (("topology", sorted({r["topology"] for r in rows})), ("cut", sorted({r["cut"] for r in rows})),
                         ("defense", sorted({r["defense"] for r in rows})),
                         ("message", sorted({f"{r['party']}:{r['message']}" for r in rows}))):
        options = "".join(f"<option value=\"{esc(v)}\">{esc(v)}</option>" for v in values)
        filters.append(f"<label>{name} <select data-filter=\"{name}\" onchange=\"applyFilters(document.getElementById("
                       f"'results'))\"><option value=\"\">all</option>{options}</select></label>")
    table = (f"<div class=\"filters\">{''.join(filters)}</div><div style=\"overflow-x: auto\"><table id=\"results\">"
             f"<thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    legend = ("<p class=\"legend\">One row per cell and attacked message; click a heading to sort. dCor: V-statistic "
              "distance correlation of the held-out raw inputs and the message; null 95%: what independent messages "
              "read at this n (permutation null), p its p-value; dCor_u^2 the bias-corrected value (about 0 under "
              "independence); dCor(x,y) the label's own reading and pdCor|y the partial dCor given the label (what the "
              "message says of x beyond the label). SSIM: the decoder's reconstructions, better of attack and mean "
              "image; beyond label: its margin over the class-mean image (what the label alone gives). Orange rows "
              "collapsed (accuracy at chance or a constant message), red rows diverged. Reconstructions: originals "
              "above, the decoder's below.</p>")
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["topology"], r["cut"]), r)
    timing = simple_table(["group", "cells", "train s", "eval s", "attack s"],
                          [[f"{t} cut {c}", r.get("group_size", ""), r.get("train_seconds", ""), r.get("eval_seconds", ""),
                            r.get("attack_seconds", "")] for (t, c), r in sorted(groups.items())])
    config = read_json(os.path.join(folder, "config.json")) if os.path.isfile(os.path.join(folder, "config.json")) else {}
    n_bad = sum(r.get("collapsed") == "true" for r in rows), sum(r.get("diverged") == "true" for r in rows)
    sections = [section("Results", legend + table)]
    ranking = os.path.join(folder, "ranking.csv")  # several defences: written by the sweep before this page
    if os.path.isfile(ranking):
        with open(ranking, newline="", encoding="utf-8") as fh:
            ranked = list(csv.reader(fh))
        if ranked:
            sections.append(section(
                "Defences ranked at matched utility (ranking.csv)",
                "<p class=\"legend\">For each accuracy margin below the undefended model, each defence's least "
                "leaking setting within it and its strongest attack's score; see ranking.md.</p>"
                + simple_table(ranked[0], [[number(v) if "." in v else v for v in r] for r in ranked[1:]],
                               text_columns=tuple(i for i, h in enumerate(ranked[0])
                                                  if h in ("topology", "message", "defense", "strongest")))))
    sections += [
        section("Figures", figures(sorted(glob.glob(os.path.join(folder, "figures", "*.png")),
                                          key=lambda p: (not os.path.basename(p).startswith("tradeoff"), p)))),
        section("Timings (per group, shared by its cells)", timing),
        section("Config", details("the sweep's config.json", config)),
    ]
    subtitle = (_subtitle(folder, "sweep") + f"; {len(rows)} rows, {n_bad[0]} collapsed, {n_bad[1]} diverged"
                + (f"; {left_out} row(s) cut short or incomplete left out" if left_out else ""))
    return page("nopeek sweep report", subtitle, sections)


# ---- a training run ---------------------------------------------------------------------------


def run_page(folder: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_json(os.path.join(folder, "metrics.json"))
    config = read_json(os.path.join(folder, "config.json")) if os.path.isfile(os.path.join(folder, "config.json")) else {}
    history = metrics.get("history", [])
    curves = ""
    if history:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["train_loss"] for h in history], "-o", markersize=3, label="train loss")
        axes[0].plot(epochs, [h["train_ce"] for h in history], "-o", markersize=3, label="train CE")
        axes[1].plot(epochs, [h["test_accuracy"] for h in history], "-o", markersize=3)
        axes[2].plot(epochs, [h["heldout_dcor"] for h in history], "-o", markersize=3, label="held-out dCor")
        if "heldout_dcor_null95" in history[0]:
            axes[2].plot(epochs, [h["heldout_dcor_null95"] for h in history], "--_", markersize=12,
                         label="null 95% (last epoch, or each with --epoch-readings)")
            axes[2].axhline(history[0]["heldout_dcor_label"], color="0.4", ls=":", label="dCor(x, label)")
        for ax, t in zip(axes, ("loss", "test accuracy", "dCor(x, z), fixed held-out batch")):
            ax.set_title(t, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        axes[2].legend(fontsize=7)
        curves = f"<img class=\"fig\" alt=\"history\" src=\"{figure_png(fig)}\">"
    leak = metrics.get("leakage", [])
    names = [k for k in ("dcor", "dcor_null95", "dcor_pvalue", "dcor_u", "dcor_label", "pdcor_label") if leak and k in leak[0]]
    leakage = simple_table(["party", "message", *names], [[e["party"], e["message"], *(number(e[k]) for k in names)]
                                                          for e in leak], text_columns=(0, 1))
    transcript = simple_table(["sender", "receiver", "tensor", "shape", "dtype", "bytes", "per"],
                              [[m["sender"], m["receiver"], m["tensor"], m["shape"], m["dtype"], m["bytes"], m["per"]]
                               for m in metrics.get("transcript", [])], text_columns=(0, 1, 2, 3, 4, 6))
    flag = ""
    if metrics.get("collapsed"):
        flag = f" <span class=\"tag collapsed\">collapsed: {esc(metrics.get('collapse_reason', ''))}</span>"
    summary = (f"<p>test accuracy {number(metrics.get('test_accuracy'))}, held-out dCor(x, z) "
               f"{number(metrics.get('dcor'))} over {esc(metrics.get('n_test', ''))} samples, "
               f"{number(metrics.get('seconds'), 1)} s{flag}</p>")
    sections = [section("Summary", summary), section("History", curves or "<p>no history</p>"),
                section("Leakage of every message, with its readings", leakage),
                section("What crosses in one step (the transcript)", transcript)]
    attacked = _run_attacks(folder)
    if attacked:
        sections.append(section("Attacks on this run (nopeek attack; baselines: baseline_*)", attacked))
    sections.append(section("Config", details("the run's config.json", config)))
    return page("nopeek training run", _subtitle(folder, "run"), sections)


# ---- an audit, a cost report, an attack ----------------------------------------------------------


def audit_page(folder: str) -> str:
    scores = read_json(os.path.join(folder, "scores.json"))
    report_md = os.path.join(folder, "report.md")
    table = ""
    if os.path.isfile(report_md):
        lines = [line for line in open(report_md, encoding="utf-8").read().splitlines() if line.startswith("|")]
        if len(lines) >= 2:
            header = [c.strip() for c in lines[0].strip("|").split("|")]
            body = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in lines[2:]]
            table = simple_table(header, body)
    sections = [section("Scores (baselines in brackets)", table),
                section("Figures", figures(sorted(glob.glob(os.path.join(folder, "*.png"))))),
                section("Everything", details("scores.json", scores))]
    return page("nopeek audit", _subtitle(folder, "audit"), sections)


def cost_page(folder: str) -> str:
    rows = _read_csv(os.path.join(folder, "cost.csv"), COST_NEEDED, "a `nopeek cost` cost.csv")
    header = list(rows[0]) if rows else []
    table = simple_table(header, [[r[c] for c in header] for r in rows], text_columns=(0, 1, 2))
    config = os.path.join(folder, "cost_config.json")
    sections = [section("Per-client cost", table),
                section("Figures", figures(sorted(glob.glob(os.path.join(folder, "*.png"))))),
                section("Config", details("cost_config.json", read_json(config) if os.path.isfile(config) else {}))]
    return page("nopeek cost report", _subtitle(folder, "cost"), sections)


def _scores_table(scores: dict) -> str:
    """Every number of an attack's scores.json (its baselines among them), one per row."""
    keys = [k for k in scores if isinstance(scores[k], (int, float)) and not isinstance(scores[k], bool)]
    return simple_table(["score", "value"], [[k, number(scores[k], 4)] for k in keys])


def _run_attacks(folder: str) -> str:
    """The attacks `nopeek attack` wrote into RUN/attacks/NAME: each one's scores and figures."""
    parts = []
    for sub in sorted(glob.glob(os.path.join(folder, "attacks", "*", "scores.json"))):
        where = os.path.dirname(sub)
        try:
            scores = read_json(sub)
        except ConfigError as err:
            parts.append(f"<p>{esc(err)}</p>")
            continue
        if not isinstance(scores, dict):
            continue
        name = os.path.relpath(where, folder)
        parts.append(f"<h3>{esc(scores.get('attack', name))} ({esc(name)})</h3>" + _scores_table(scores)
                     + figures(sorted(glob.glob(os.path.join(where, "*.png")))))
    return "".join(parts)


def attack_page(folder: str) -> str:
    scores = read_json(os.path.join(folder, "scores.json"))
    sections = [section("Scores", _scores_table(scores)),
                section("Figures", figures(sorted(glob.glob(os.path.join(folder, "*.png"))))),
                section("Everything", details("scores.json", scores))]
    return page(f"nopeek attack: {scores.get('attack', '')}", _subtitle(folder, "attack"), sections)

