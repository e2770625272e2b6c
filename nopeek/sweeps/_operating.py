"""Operating points: a defence's strength chosen on the validation split, reported on the test split.

A preset that picks "the" strength of a defence (the README's operating point) must not
pick it by looking at the test split. With `validation_fraction` > 0 every sweep row
carries `val_accuracy` and `val_dcor` (measured on samples carved from the training set,
never trained on, never the test split). `operating_points` applies one stated rule to
those, per (topology, cut, message) and defence:

    among the strengths at which no more than `max_collapsed` seeds collapsed and whose
    mean validation accuracy (over the seeds that did not collapse) is within
    `accuracy_drop` of the undefended model's, the one with the lowest mean validation
    dCor; none when no strength qualifies.

The chosen setting's test numbers (means over the seeds that did not collapse, with 95%
intervals, and how many collapsed) are what a README reports.
"""

from __future__ import annotations

import numpy as np

from nopeek.errors import ConfigError
from nopeek.sweeps._summary import summarize

RULE = ("lowest mean validation dCor among the strengths whose mean validation accuracy is within {drop:g} of the "
        "undefended model's and at which at most {collapsed} seed(s) collapsed")


def operating_points(rows: list[dict], *, accuracy_drop: float = 0.01, max_collapsed: int = 0) -> list[dict]:
    """One chosen setting per (topology, cut, party, message, defence): its summary row (test
    numbers over the seeds that did not collapse) with `val_accuracy`, `val_dcor` (the
    validation means it was chosen on), `reference_val_accuracy` (the undefended model's) and
    `rule`. Raises ConfigError when the rows have no validation split."""
    summary = summarize(rows)
    if not any(np.isfinite(r.get("val_accuracy", float("nan"))) for r in summary):
        raise ConfigError("choosing an operating point needs a validation split: run the sweep with "
                          "--validation-fraction (e.g. 0.1), never the test split")
    groups: dict = {}
    for r in summary:
        groups.setdefault((r["topology"], r["cut"], r["party"], r["message"]), []).append(r)
    out = []
    for key, settings in sorted(groups.items()):
        reference = [r for r in settings if r["defense"] == "none"]
        if not reference:
            continue
        ref_acc = reference[0]["val_accuracy"]
        for defense in sorted({r["defense"] for r in settings} - {"none"}):
            candidates = [r for r in settings if r["defense"] == defense and r["collapsed"] <= max_collapsed
                          and not r["all_collapsed"] and r["val_accuracy"] >= ref_acc - accuracy_drop]
            if not candidates:
                continue
            best = min(candidates, key=lambda r: (r["val_dcor"], float(r["strength"])))
            out.append({**best, "reference_val_accuracy": ref_acc,
                        "rule": RULE.format(drop=accuracy_drop, collapsed=max_collapsed)})
    return out
