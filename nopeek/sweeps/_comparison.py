"""Tables that compare the attacks of a sweep cell by cell, from its results rows alone.

`attack_comparison(rows)`: one line per (topology, cut, defence, seed), each attack's
reconstruction MSE and SSIM beside the free guesses every attack is scored against (the
attacker's mean image, and the class-mean image: what the label alone gives), and the
label inference of the attacks that read labels, beside chance. `leak_curve(rows)`: the
adaptive attacker's MSE at each leaked share of the training set. Both are markdown, so
a guide can carry them verbatim (a test regenerates them from the committed results file).
"""

from __future__ import annotations

import math
import re

from nopeek.plots import ATTACK_PREFIXES as PREFIXES
from nopeek.plots import ATTACK_TITLES as TITLES
from nopeek.sweeps._results import f


def _num(v, digits: int) -> str:
    return "-" if not math.isfinite(v) else f"{v:.{digits}f}"


def _cell(row: dict, prefix: str) -> str:
    mse, ssim = f(row.get(f"{prefix}_mse")), f(row.get(f"{prefix}_ssim"))
    return "-" if not math.isfinite(mse) else f"{_num(mse, 4)} / {_num(ssim, 3)}"


def _order(row: dict) -> tuple:
    return (row["topology"], row["cut"], row["defense"], f(row["strength"]), int(row["seed"]))


def _defence(row: dict) -> str:
    return "none" if row["defense"] == "none" else f"{row['defense']} {f(row['strength']):g}"


def present(rows: list[dict]) -> list[str]:
    """The attacks of `PREFIXES` that scored some row."""
    return [n for n, p in PREFIXES.items() if any(math.isfinite(f(r.get(f"{p}_mse"))) for r in rows)]


def attack_comparison(rows: list[dict]) -> str:
    """The markdown table: per row acc, dCor (with its null's 95% quantile), the free guesses and every attack's MSE / SSIM,
    and label inference (SDAR's in U-shaped) beside chance."""
    names = present(rows)
    labels = [n for n in names if any(math.isfinite(f(r.get(f"{PREFIXES[n]}_label_accuracy"))) for r in rows)]
    head = (["topology", "cut", "defence", "seed", "acc", "dCor (null 95%)", "mean image", "class mean"]
            + [TITLES[n] for n in names] + [f"{TITLES[n]} labels (chance)" for n in labels])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    guess = next((PREFIXES[n] for n in ("adaptive", "sdar", "fora", "adaptive_alpha") if n in names), None)
    for r in sorted(rows, key=_order):
        if r.get("diverged") == "true":
            continue
        base = "attack" if guess is None else guess
        mean = f"{_num(f(r.get(base + '_baseline_mse')), 4)} / {_num(f(r.get(base + '_baseline_ssim')), 3)}"
        cm_mse, cm_ssim = f(r.get(f"{guess}_class_mean_mse")), f(r.get(f"{guess}_class_mean_ssim"))
        class_mean = "-" if not math.isfinite(cm_mse) else f"{_num(cm_mse, 4)} / {_num(cm_ssim, 3)}"
        cells = [r["topology"], r["cut"], _defence(r), r["seed"], _num(f(r.get("accuracy")), 3),
                 _num(f(r.get("dcor")), 3) + (f" ({_num(f(r.get('dcor_null95')), 3)})"
                                               if math.isfinite(f(r.get("dcor_null95"))) else ""),
                 mean, class_mean] + [_cell(r, PREFIXES[n]) for n in names]
        for n in labels:
            acc, chance = f(r.get(f"{PREFIXES[n]}_label_accuracy")), f(r.get(f"{PREFIXES[n]}_label_chance"))
            cells.append("-" if not math.isfinite(acc) else f"{_num(acc, 3)} ({_num(chance, 3)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def leak_curve(rows: list[dict], name: str = "adaptive") -> str:
    """The markdown table of `name`'s leak-fraction curve: MSE / SSIM at each leaked share
    (its number of pairs in the header), beside the mean image of each share's own pairs."""
    prefix = PREFIXES.get(name, name)
    shares = sorted({float(m.group(1)) for r in rows for k in r
                     for m in [re.fullmatch(rf"{prefix}_leak([0-9.]+)_mse", k)] if m and math.isfinite(f(r[k]))})
    if not shares:
        return ""
    keys = [f"{prefix}_leak{s:g}" for s in shares]
    pairs = [next((int(f(r.get(k + "_n_pairs"))) for r in rows if math.isfinite(f(r.get(k + "_n_pairs")))), 0)
             for k in keys]
    head = ["topology", "cut", "defence", "seed"] + [f"{s:g}% ({n} pairs)" for s, n in zip(shares, pairs)] + ["mean image (50%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=_order):
        if not math.isfinite(f(r.get(keys[0] + "_mse"))):
            continue
        cells = [r["topology"], r["cut"], _defence(r), r["seed"]] + [_cell(r, k) for k in keys]
        cells.append(f"{_num(f(r.get(keys[-1] + '_baseline_mse')), 4)} / {_num(f(r.get(keys[-1] + '_baseline_ssim')), 3)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
