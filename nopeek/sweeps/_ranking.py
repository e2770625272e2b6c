"""Ranking defences at matched utility: at the accuracy a user can afford, which defence leaks
least, and what guarantee comes with it.

From a sweep's rows (any grid with several defence families), per (topology, cut, message):

- each setting (defence, strength) averaged over its seeds: accuracy; every reconstruction
  attack's SSIM, the strongest of them (the highest mean SSIM) beside the mean image's
  (the free baseline); the same for the clean classifier's accuracy on the reconstructions,
  beside the mean image's and the class-mean image's (what the label alone gives it);
  the beyond-label SSIM where the rows have it (`*beyond_label_ssim`, else "n/a"); dCor(x, z)
  beside its permutation null's 95% quantile where the rows have `dcor_null95`; the
  (epsilon, delta) of a defence that claims one; VFLAIR's defence capability score.
- the matched-utility table: for each margin (1, 2, 5 points of accuracy) and each defence
  family, of its settings whose mean accuracy is within the margin of the undefended
  model's, the one whose strongest attack has the lowest SSIM ("n/a" where none is).

VFLAIR's defence capability score (Zou et al., "VFLAIR: a research library and benchmark for
vertical federated learning", arXiv 2310.09827; `src/metrics/data_process.py`, `cal_dcs`):
DCS = 1 / (1 + sqrt((1 - b) max(AP - AP*, 0)^2 + b max(MP* - MP, 0)^2)), b = 0.5, with MP the
test accuracy, MP* the undefended model's, AP an attack's performance and AP* = 0; averaged
over the attacks of a type (T-DCS; here the feature-reconstruction attacks, so it is also
the C-DCS). For feature reconstruction VFLAIR's AP is 1 - MSE (clipped to [0, 1]); we give
that (`dcs`) and the stricter AP = SSIM clipped to [0, 1] (`dcs_ssim`), since 1 - MSE is
0.9-0.99 for any MNIST reconstruction.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

import attacks
from nopeek.core import atomic_write_text
from nopeek.plots import mean_ci
from nopeek.sweeps._columns import column

MARGINS = (0.01, 0.02, 0.05)  # accuracy within 1, 2 and 5 points of the undefended model's
BETA = 0.5  # VFLAIR's weight of the main task in the DCS


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def reconstruction_attacks(rows) -> list[str]:
    """The registered reconstruction attacks whose SSIM the rows hold (the decoder's is
    `attack_ssim`, every other's `NAME_ssim`)."""
    present = {k for r in rows for k, v in r.items() if v not in (None, "")}
    return [name for name, spec in attacks.ATTACKS.items()
            if spec.kind == "reconstruction" and column(f"{name}_ssim") in present]


def families(rows) -> list[str]:
    """The defence families of the rows, the undefended cell ("none") first."""
    names = list(dict.fromkeys(r.get("defense", "none") for r in rows))
    return sorted(names, key=lambda n: (n != "none", names.index(n)))


def several_families(rows) -> bool:
    """Whether the rows compare at least two defences besides none (what `write_ranking` needs)."""
    return len([f for f in families(rows) if f != "none"]) >= 2


def dcs(mp: float, ap: float, mp_star: float, ap_star: float = 0.0, beta: float = BETA) -> float:
    """VFLAIR's defence capability score of one (attack performance, main-task performance)."""
    d_ap, d_mp = max(ap - ap_star, 0.0), max(mp_star - mp, 0.0)
    return 1.0 / (1.0 + math.sqrt((1 - beta) * d_ap**2 + beta * d_mp**2))


def _mean(members, name) -> tuple[float, float]:
    return mean_ci([_f(m.get(name)) for m in members])


def _optional(members, suffix: str) -> float:
    """The largest mean over the columns ending in `suffix` the rows fill (NaN if none)."""
    names = {k for m in members for k, v in m.items() if k.endswith(suffix) and v not in (None, "")}
    means = [_mean(members, n)[0] for n in sorted(names)]
    means = [v for v in means if np.isfinite(v)]
    return max(means) if means else float("nan")


def setting_points(rows) -> dict:
    """{(topology, cut, party:message): [point per setting]}: means over the live seeds (neither
    diverged nor collapsed; a setting every seed of which collapsed has no point).

    A point: defense, strength, seeds, accuracy (and _ci), per-attack "ssim" {name: mean},
    strongest (attack name), ssim (and _ci) and classifier of the strongest attack,
    baseline_ssim, baseline_classifier (the mean image's), class_mean_classifier (the
    class-mean image's: the label alone), beyond_label_ssim, dcor (and
    _ci), dcor_null95, dp_epsilon, dp_epsilon_epoch, dp_delta, dp_covers, seeds (the live
    ones), collapsed (seeds left out),
    and dcs, dcs_ssim (set once the undefended accuracy is known)."""
    names = reconstruction_attacks(rows)
    groups: dict = {}
    for r in rows:
        key = (r.get("topology"), str(r.get("cut")), f"{r.get('party', 'client')}:{r.get('message', 'z')}")
        groups.setdefault(key, {}).setdefault((r.get("defense", "none"), _f(r.get("strength"))), []).append(r)
    out = {}
    for key, settings in groups.items():
        points = []
        for (defense, strength), members in settings.items():
            trained = [m for m in members if str(m.get("diverged", "")).lower() != "true"]
            # collapsed seeds (no model: accuracy at chance or a constant message) are counted, never averaged in
            live = [m for m in trained if str(m.get("collapsed", "")).lower() != "true"]
            if not live:
                continue
            p = {"defense": defense, "strength": 0.0 if defense == "none" else strength, "seeds": len(live),
                 "collapsed": len(trained) - len(live)}
            p["accuracy"], p["accuracy_ci"] = _mean(live, "accuracy")
            p["ssim"] = {n: _mean(live, column(f"{n}_ssim"))[0] for n in names}
            p["mse"] = {n: _mean(live, column(f"{n}_mse"))[0] for n in names}
            p["classifier"] = {n: _mean(live, column(f"{n}_classifier_accuracy"))[0] for n in names}
            finite = {n: v for n, v in p["ssim"].items() if np.isfinite(v)}
            p["strongest"] = max(finite, key=finite.get) if finite else ""
            strongest = p["strongest"]
            p["strongest_ssim"], p["strongest_ssim_ci"] = (_mean(live, column(f"{strongest}_ssim")) if strongest
                                                           else (float("nan"), float("nan")))
            cls = {n: v for n, v in p["classifier"].items() if np.isfinite(v)}
            p["strongest_classifier"] = max(cls.values()) if cls else float("nan")
            p["baseline_ssim"] = _mean(live, column(f"{strongest}_baseline_ssim"))[0] if strongest else float("nan")
            p["baseline_classifier"] = (_mean(live, column(f"{strongest}_baseline_classifier_accuracy"))[0]
                                        if strongest else float("nan"))
            # what the label alone gives the classifier: its accuracy on each target's class-mean image
            p["class_mean_classifier"] = (_mean(live, "class_mean_classifier_accuracy")[0]
                                          if any(m.get("class_mean_classifier_accuracy") for m in live) else float("nan"))
            p["beyond_label_ssim"] = _optional(live, "beyond_label_ssim")
            p["dcor"], p["dcor_ci"] = _mean(live, "dcor")
            p["dcor_null95"] = _mean(live, "dcor_null95")[0] if any("dcor_null95" in m for m in live) else float("nan")
            for name in ("dp_epsilon", "dp_epsilon_epoch", "dp_delta"):
                p[name] = _mean(live, name)[0]
            p["dp_covers"] = next((m.get("dp_covers") for m in live if m.get("dp_covers")), "")
            points.append(p)
        reference = next((p for p in points if p["defense"] == "none"), None)
        mp_star = reference["accuracy"] if reference else float("nan")
        for p in points:
            ap_mse = [min(max(1.0 - v, 0.0), 1.0) for v in p["mse"].values() if np.isfinite(v)]
            ap_ssim = [min(max(v, 0.0), 1.0) for v in p["ssim"].values() if np.isfinite(v)]
            ok = np.isfinite(mp_star) and np.isfinite(p["accuracy"])
            p["dcs"] = float(np.mean([dcs(p["accuracy"], a, mp_star) for a in ap_mse])) if ok and ap_mse else float("nan")
            p["dcs_ssim"] = (float(np.mean([dcs(p["accuracy"], a, mp_star) for a in ap_ssim])) if ok and ap_ssim
                             else float("nan"))
        order = {name: i for i, name in enumerate(families(rows))}
        out[key] = sorted(points, key=lambda p: (order.get(p["defense"], 99), p["strength"]))
    return out


def matched_table(points: list[dict], margins=MARGINS) -> list[dict]:
    """For each margin and defence family: its setting with the lowest strongest-attack SSIM
    among those within `margin` of the undefended accuracy (None where no setting is), with
    `rank` (1 = least leakage at that margin) and `reference_accuracy`."""
    reference = next((p for p in points if p["defense"] == "none"), None)
    if reference is None:
        return []
    acc0 = reference["accuracy"]
    names = list(dict.fromkeys(p["defense"] for p in points))
    out = []
    for margin in margins:
        entries = []
        for name in names:
            fits = [p for p in points if p["defense"] == name and p["accuracy"] >= acc0 - margin - 1e-12
                    and np.isfinite(p["strongest_ssim"])]
            best = min(fits, key=lambda p: (p["strongest_ssim"], p["strongest_classifier"])) if fits else None
            entries.append({"margin": margin, "family": name, "reference_accuracy": acc0, "point": best})
        ranked = sorted([e for e in entries if e["point"] is not None], key=lambda e: e["point"]["strongest_ssim"])
        for i, e in enumerate(ranked):
            e["rank"] = i + 1
        out += entries
    return out


def _num(v, digits=3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _pm(v, ci, digits=3) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f} ± {ci:.{digits}f}" if np.isfinite(ci) and ci > 0 else f"{v:.{digits}f}"


def _epsilon(p) -> str:
    if not np.isfinite(p.get("dp_epsilon", float("nan"))):
        return "-"
    return f"{p['dp_epsilon']:.3g} (δ {p['dp_delta']:.0e}; {p['dp_epsilon_epoch']:.3g}/epoch)"


def _points(margin: float) -> str:
    """"1 point", "2 points"."""
    n = margin * 100
    return f"{n:g} point" + ("" if abs(n - 1) < 1e-9 else "s")


def headline(table: list[dict], margin: float) -> str:
    """One sentence: at `margin`, the defence that leaks least, its scores and its epsilon."""
    entries = [e for e in table if e["margin"] == margin and e.get("rank") == 1]
    if not entries:
        return f"Within {_points(margin)} of accuracy: no setting qualifies."
    p, acc0 = entries[0]["point"], entries[0]["reference_accuracy"]
    eps = _epsilon(p)
    return (f"Within {_points(margin)} of the undefended accuracy ({acc0:.3f}), the defence that leaks least is "
            f"**{p['defense']}** at strength {p['strength']:g} (accuracy {p['accuracy']:.3f}): its strongest attack "
            f"({p['strongest']}) reaches SSIM {p['strongest_ssim']:.3f} (mean image {p['baseline_ssim']:.3f}), a clean "
            f"classifier reads {p['strongest_classifier'] * 100:.1f}% of the reconstructions (mean image "
            f"{p['baseline_classifier'] * 100:.1f}%, class-mean image {p['class_mean_classifier'] * 100:.1f}%), "
            f"dCor {p['dcor']:.3f}; "
            + ("epsilon " + eps + "." if eps != "-" else "no formal guarantee (no epsilon)."))


def format_ranking(rows, margins=MARGINS) -> str:
    """The ranking as Markdown: per (topology, cut, message), the headline at each margin, the
    matched-utility table, and every setting's scores."""
    out = []
    for (topology, cut, message), points in setting_points(rows).items():
        table = matched_table(points, margins)
        if not table:
            continue
        names = reconstruction_attacks(rows)
        out.append(f"### {topology}, cut {cut}, {message}: attacks {', '.join(names)}\n")
        out += [f"- {headline(table, m)}" for m in margins]
        out.append("")
        out.append("| within | rank | defence | strength | accuracy | strongest attack: SSIM (mean image) | "
                   "beyond-label SSIM | classifier on reconstructions (mean image / class mean) | dCor (null 95%) | epsilon | "
                   "DCS (AP 1-MSE / SSIM) |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for e in table:
            p = e["point"]
            within = f"{e['margin'] * 100:g} pt"
            if p is None:
                out.append(f"| {within} | - | {e['family']} | no setting within {_points(e['margin'])} | "
                           "| | | | | | |")
                continue
            out.append(
                f"| {within} | {e['rank']} | {p['defense']} | {p['strength']:g} | {_pm(p['accuracy'], p['accuracy_ci'])}"
                f"{_collapsed_note(p)} | "
                f"{p['strongest']} {_pm(p['strongest_ssim'], p['strongest_ssim_ci'])} ({_num(p['baseline_ssim'])}) | "
                f"{_num(p['beyond_label_ssim'])} | {_num(p['strongest_classifier'])} ({_num(p['baseline_classifier'])} / "
                f"{_num(p['class_mean_classifier'])}) | "
                f"{_num(p['dcor'])} ({_num(p['dcor_null95'])}) | {_epsilon(p)} | "
                f"{_num(p['dcs'])} / {_num(p['dcs_ssim'])} |")
        out.append("")
        out.append("Every setting (means over seeds; SSIM per attack):\n")
        out.append(f"| defence | strength | seeds | accuracy | {' | '.join(f'{n} SSIM' for n in names)} | "
                   "classifier, best attack (class mean) | dCor (null 95%) | epsilon | DCS (1-MSE / SSIM) |")
        out.append("| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- | --- |")
        for p in points:
            note = f" (collapsed {p['collapsed']} of {p['seeds'] + p['collapsed']}: left out)" if p["collapsed"] else ""
            out.append(f"| {p['defense']} | {p['strength']:g} | {p['seeds']}{note} | {_pm(p['accuracy'], p['accuracy_ci'])} | "
                       + " | ".join(_num(p["ssim"][n]) for n in names)
                       + f" | {_num(p['strongest_classifier'])} ({_num(p['class_mean_classifier'])}) | {_num(p['dcor'])} "
                       f"({_num(p['dcor_null95'])}) | {_epsilon(p)} | "
                       f"{_num(p['dcs'])} / {_num(p['dcs_ssim'])} |")
        out.append("")
    return "\n".join(out)


RANKING_COLUMNS = ["topology", "cut", "message", "margin", "rank", "reference_accuracy", "defense", "strength",
                   "seeds", "collapsed", "accuracy", "accuracy_ci", "strongest", "strongest_ssim", "strongest_ssim_ci",
                   "baseline_ssim", "beyond_label_ssim", "strongest_classifier", "baseline_classifier", "class_mean_classifier", "dcor",
                   "dcor_null95", "dp_epsilon", "dp_epsilon_epoch", "dp_delta", "dp_covers", "dcs", "dcs_ssim"]


def _collapsed_note(p: dict) -> str:
    """" (1 seed; collapsed 1 of 2: left out)" where seeds of the setting collapsed, else ""."""
    if not p.get("collapsed"):
        return ""
    n = p["seeds"] + p["collapsed"]
    return f" ({p['seeds']} seed{'s' * (p['seeds'] > 1)}; collapsed {p['collapsed']} of {n}: left out)"


def ranking_rows(rows, margins=MARGINS) -> list[dict]:
    """The matched-utility table as plain rows (`RANKING_COLUMNS`), for ranking.csv."""
    out = []
    for (topology, cut, message), points in setting_points(rows).items():
        for e in matched_table(points, margins):
            p = e["point"] or {"defense": e["family"]}
            out.append({"topology": topology, "cut": cut, "message": message, "margin": e["margin"],
                        "rank": e.get("rank", ""), "reference_accuracy": e["reference_accuracy"],
                        **{c: p.get(c, "") for c in RANKING_COLUMNS[6:]}})
    return out


def frontier_points(rows) -> dict:
    """{(topology, cut, message): {"points": setting points, "reference_accuracy"}} for the figure."""
    out = {}
    for key, points in setting_points(rows).items():
        reference = next((p for p in points if p["defense"] == "none"), None)
        out[key] = {"points": points, "reference_accuracy": reference["accuracy"] if reference else float("nan")}
    return out


def write_ranking(rows, out_dir: str) -> list[str]:
    """Write `out_dir`/ranking.md, ranking.csv and figures/defence_frontier.png from a sweep's
    rows; [] (nothing written) unless the rows compare several defence families."""
    from nopeek.plots import defence_frontier_figure

    rows = [r for r in rows if r.get("acts_on") != "gradient"]  # the labels' defences are ranked by the label attacks
    if not several_families(rows) or not reconstruction_attacks(rows):
        return []
    paths = []
    path = os.path.join(out_dir, "ranking.md")
    atomic_write_text(path, format_ranking(rows) + "\n")
    paths.append(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RANKING_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in ranking_rows(rows):
        writer.writerow({k: ("" if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()})
    path = os.path.join(out_dir, "ranking.csv")
    atomic_write_text(path, buf.getvalue())
    paths.append(path)
    paths.append(defence_frontier_figure(frontier_points(rows), os.path.join(out_dir, "figures", "defence_frontier.png"),
                                         margins=MARGINS))
    return paths
