"""Operating points are chosen on a validation split carved from the training set, never on
the test split, by one stated rule; collapsed seeds are counted and left out of the means."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from nopeek.data import load
from nopeek.data._datasets import split_validation
from nopeek.errors import ConfigError
from nopeek.sweeps import operating_points, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = os.path.join(ROOT, "docs", "results", "operating-point", "results.csv")


def test_the_validation_split_is_carved_from_training_only():
    ds = load("digits")
    split = split_validation(ds, 0.2, seed=0)
    n = len(ds.x_train)
    assert len(split.x_val) == round(0.2 * n) and len(split.x_train) == n - len(split.x_val)
    # disjoint, together the training set, the test split untouched
    rows = {x.tobytes() for x in ds.x_train}
    train, val = {x.tobytes() for x in split.x_train}, {x.tobytes() for x in split.x_val}
    assert not (train & val) and (train | val) <= rows
    assert np.array_equal(split.x_test, ds.x_test) and np.array_equal(split.y_test, ds.y_test)
    # stratified: each class's share of the validation split within one sample of its share of the training set
    share = np.bincount(ds.y_train, minlength=ds.num_classes) / n
    counts = np.bincount(split.y_val, minlength=ds.num_classes)
    assert np.all(np.abs(counts - share * len(split.y_val)) <= 1)
    again = split_validation(ds, 0.2, seed=0)  # seeded: the same split again, another with another seed
    assert np.array_equal(again.y_val, split.y_val) and np.array_equal(again.x_val, split.x_val)
    assert not np.array_equal(split_validation(ds, 0.2, seed=1).x_val, split.x_val)


def _rule(rows, drop, max_collapsed):
    """The stated rule, computed here from the raw rows (independently of `summarize`)."""
    def live(members):
        return [m for m in members if m["collapsed"] != "true"]

    settings: dict = {}
    for r in rows:
        settings.setdefault((r["defense"], float(r["strength"])), []).append(r)
    ref = np.mean([float(m["val_accuracy"]) for m in live(settings[("none", 0.0)])])
    best = {}
    for (defense, strength), members in settings.items():
        ok = live(members)
        if defense == "none" or not ok or len(members) - len(ok) > max_collapsed:
            continue
        if np.mean([float(m["val_accuracy"]) for m in ok]) < ref - drop:
            continue
        key = (np.mean([float(m["val_dcor"]) for m in ok]), strength)
        if defense not in best or key < best[defense][0]:
            best[defense] = (key, strength, np.mean([float(m["accuracy"]) for m in ok]), len(members) - len(ok))
    return best


@pytest.mark.parametrize("drop,max_collapsed", [(0.01, 0), (0.02, 0), (0.05, 1)])
def test_operating_points_follow_the_stated_rule(drop, max_collapsed):
    rows = read_rows(ROWS)
    chosen = operating_points(rows, accuracy_drop=drop, max_collapsed=max_collapsed)
    expected = _rule(rows, drop, max_collapsed)
    assert {c["defense"]: float(c["strength"]) for c in chosen} == {d: e[1] for d, e in expected.items()}
    for c in chosen:
        _, _, test_accuracy, collapsed = expected[c["defense"]]
        assert c["accuracy"] == pytest.approx(test_accuracy)  # test numbers of the live seeds only
        assert c["collapsed"] == collapsed and "validation" in c["rule"]


def test_a_collapsed_seed_is_left_out_and_can_disqualify_its_strength():
    rows = read_rows(ROWS)
    chosen = {c["defense"]: c for c in operating_points(rows)}
    pick = chosen["nopeek"]
    marked = copy.deepcopy(rows)
    victim = next(r for r in marked if r["defense"] == "nopeek" and float(r["strength"]) == float(pick["strength"]))
    victim["collapsed"] = "true"
    after = {c["defense"]: c for c in operating_points(marked, max_collapsed=1)}["nopeek"]
    if float(after["strength"]) == float(pick["strength"]):  # still chosen: one seed fewer in its means
        assert after["collapsed"] == 1 and after["seeds"] == pick["seeds"]
        assert after["accuracy"] != pytest.approx(pick["accuracy"])
    strict = {c["defense"]: c for c in operating_points(marked, max_collapsed=0)}
    assert "nopeek" not in strict or float(strict["nopeek"]["strength"]) != float(pick["strength"])


def test_no_validation_split_no_operating_point():
    rows = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in read_rows(ROWS)]
    with pytest.raises(ConfigError, match="validation split"):
        operating_points(rows)
