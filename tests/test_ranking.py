"""The defence ranking at matched utility (issue 23): the table's choice per margin, VFLAIR's
DCS, the optional readings, and the `defences` preset's small version end to end."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import attacks
from nopeek.sweeps import (
    PRESET_INFO, dcs, format_ranking, matched_table, read_rows, reconstruction_attacks, run_preset, setting_points,
    several_families, write_ranking,
)


def _row(defense, strength, seed, accuracy, ssim, **more):
    row = {"dataset": "digits", "model": "mlp", "topology": "vanilla", "cut": "1", "defense": defense,
           "strength": str(strength), "seed": str(seed), "party": "client", "message": "z", "accuracy": str(accuracy),
           "dcor": "0.5", "attack_ssim": str(ssim), "attack_mse": "0.05", "baseline_ssim": "0.3",
           "baseline_mse": "0.07", "attack_classifier_accuracy": "0.8", "baseline_classifier_accuracy": "0.1",
           "class_mean_classifier_accuracy": "0.95", "diverged": "false", "collapsed": "false", "acts_on": "message"}
    row.update({k: str(v) for k, v in more.items()})
    return row


ROWS = [
    *[_row("none", 0.0, s, 0.900, 0.80) for s in (0, 1)],
    # NoPeek: 0.895 (within 1 pt) leaks 0.70; 0.875 (within 5) leaks 0.50
    *[_row("nopeek", 0.5, s, 0.895, 0.70, alpha=0.5) for s in (0, 1)],
    *[_row("nopeek", 2.0, s, 0.875, 0.50, alpha=2.0) for s in (0, 1)],
    # dp_message: within 2 pts at 0.60 with an epsilon; far below at the stronger setting
    *[_row("dp_message", 1.0, s, 0.885, 0.60, dp_epsilon=12.5, dp_epsilon_epoch=4.0, dp_delta=1e-5,
           dp_covers="messages") for s in (0, 1)],
    *[_row("dp_message", 4.0, s, 0.500, 0.30, dp_epsilon=2.0, dp_epsilon_epoch=0.7, dp_delta=1e-5,
           dp_covers="messages") for s in (0, 1)],
]


def test_matched_table_picks_the_least_leaking_setting_within_each_margin():
    (key, points), = setting_points(ROWS).items()
    assert key == ("vanilla", "1", "client:z") and several_families(ROWS)
    table = matched_table(points, (0.01, 0.02, 0.05))
    pick = {(e["margin"], e["family"]): e for e in table}
    assert pick[(0.01, "nopeek")]["point"]["strength"] == 0.5 and pick[(0.01, "dp_message")]["point"] is None
    assert pick[(0.02, "dp_message")]["point"]["strength"] == 1.0 and pick[(0.02, "dp_message")]["rank"] == 1
    assert pick[(0.05, "nopeek")]["point"]["strength"] == 2.0 and pick[(0.05, "nopeek")]["rank"] == 1
    assert pick[(0.01, "none")]["rank"] == 2  # the undefended model is a candidate at every margin
    text = format_ranking(ROWS)
    assert "Within 2 points of the undefended accuracy (0.900), the defence that leaks least is **dp_message**" in text
    assert "epsilon 12.5 (δ 1e-05; 4/epoch)" in text
    assert "beyond-label SSIM" in text and "| n/a |" in text  # readings the rows lack are shown as n/a
    # the classifier's reading beside the mean image's and what the label alone gives (class means)
    assert "| 0.800 (0.100 / 0.950) |" in text and "(mean image 10.0%, class-mean image 95.0%)" in text


def test_dcs_is_vflairs_formula():
    # VFLAIR's cal_dcs: 1 / (1 + sqrt(0.5 max(AP - AP*, 0)^2 + 0.5 max(MP* - MP, 0)^2))
    assert dcs(0.8, 0.6, 0.9) == pytest.approx(1 / (1 + np.sqrt(0.5 * 0.36 + 0.5 * 0.01)))
    assert dcs(0.95, 0.0, 0.9) == 1.0  # better than the undefended accuracy and no attack: ideal
    points = setting_points(ROWS)[("vanilla", "1", "client:z")]
    reference = next(p for p in points if p["defense"] == "none")
    assert reference["dcs"] == pytest.approx(dcs(0.9, 0.95, 0.9))  # AP = 1 - MSE (VFLAIR's)
    assert reference["dcs_ssim"] == pytest.approx(dcs(0.9, 0.80, 0.9))


def test_optional_readings_and_other_attacks_are_read_when_present():
    attacks.register("toy_inversion", lambda inputs: [], kind="reconstruction", needs=("targets",), defaults={})
    try:
        rows = [dict(r, toy_inversion_ssim="0.9" if r["defense"] != "dp_message" else "0.1",
                     toy_inversion_mse="0.01", toy_inversion_classifier_accuracy="0.95",
                     beyond_label_ssim="0.2", dcor_null95="0.31") for r in ROWS]
        assert reconstruction_attacks(rows) == ["decoder", "toy_inversion"]
        points = setting_points(rows)[("vanilla", "1", "client:z")]
        nopeek = next(p for p in points if p["defense"] == "nopeek")
        assert nopeek["strongest"] == "toy_inversion" and nopeek["strongest_ssim"] == pytest.approx(0.9)
        assert nopeek["strongest_classifier"] == pytest.approx(0.95)
        assert nopeek["beyond_label_ssim"] == pytest.approx(0.2) and nopeek["dcor_null95"] == pytest.approx(0.31)
        dp = next(p for p in points if p["defense"] == "dp_message")
        assert dp["strongest"] == "decoder"  # the strongest attack is chosen per setting
    finally:
        attacks.ATTACKS.pop("toy_inversion")


def test_write_ranking_needs_several_defences(tmp_path):
    assert write_ranking([r for r in ROWS if r["defense"] in ("none", "nopeek")], str(tmp_path)) == []
    paths = write_ranking(ROWS, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["ranking.md", "ranking.csv", "defence_frontier.png"]
    table = list(csv.DictReader(open(tmp_path / "ranking.csv")))
    assert len(table) == 3 * 3 and {r["defense"] for r in table} == {"none", "nopeek", "dp_message"}


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_defences_preset_small_runs_and_each_defence_lowers_its_attack_score(tmp_path):
    """The `defences` preset's small version (digits): every defence, two attacks (the decoder
    and white-box inversion; the full preset runs every image attack of the registry, and the
    modern ones run in a sweep in the modern-attacks notebook's test), the ranking files; each
    defence's strongest-attack SSIM does not rise with its strength beyond the noise over seeds
    (its 95% interval), and its strongest strength lowers it."""
    preset = PRESET_INFO["defences"]
    assert set(preset.config.attacks) == {n for n, s in attacks.ATTACKS.items() if s.kind == "reconstruction"}
    assert preset.small.attacks == ["decoder", "whitebox"]
    rows, out = run_preset("defences", str(tmp_path / "defences"))
    assert os.path.exists(os.path.join(out, "ranking.md")) and os.path.exists(os.path.join(out, "figures",
                                                                                           "defence_frontier.png"))
    report = open(os.path.join(out, "report.html"), encoding="utf-8").read()  # written last: shows both
    assert "Defences ranked at matched utility" in report and 'alt="defence_frontier.png"' in report
    rows = read_rows(os.path.join(out, "results.csv"))
    points = setting_points(rows)[("vanilla", "1", "client:z")]
    base = next(p for p in points if p["defense"] == "none")
    for family in ("nopeek", "noise", "dp_message", "dp_sgd", "mid"):
        mine = [base] + [p for p in points if p["defense"] == family]
        ssim = [p["strongest_ssim"] for p in mine]  # the ranking's score: the strongest attack's mean SSIM
        spread = [p["strongest_ssim_ci"] for p in mine]  # 95% interval over the seeds
        for a, b, s in zip(ssim, ssim[1:], spread[1:]):
            assert b <= a + s, (family, ssim, spread)
        assert ssim[-1] < ssim[0], (family, ssim)
    dp = [r for r in rows if r["defense"] in ("dp_message", "dp_sgd")]
    assert dp and all(float(r["dp_epsilon"]) > 0 and r["dp_delta"] == "1e-05" for r in dp)
    assert all(r["dp_epsilon"] == "" for r in rows if r["defense"] not in ("dp_message", "dp_sgd"))
    for family in ("dp_message", "dp_sgd"):  # more noise, smaller epsilon
        eps = [float(r["dp_epsilon"]) for r in sorted((r for r in dp if r["defense"] == family and r["seed"] == "0"),
                                                      key=lambda r: float(r["strength"]))]
        assert eps == sorted(eps, reverse=True) and len(set(eps)) == len(eps)
