"""`nopeek report`: one self-contained HTML page per folder, whose numbers are the folder's."""

from __future__ import annotations

import csv
import html.parser
import os
import shutil

import pytest

from nopeek.cli import main
from nopeek.report import REPORT, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Page(html.parser.HTMLParser):
    """Collects what the checks need: rows by key with their cells' raw values, images, links."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}  # row key -> column -> the raw value as written
        self.classes: dict[str, str] = {}  # row key -> its class (collapsed, diverged or none)
        self.images, self.links, self.stack = [], [], []
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "tr" and "data-key" in a:
            assert a["data-key"] not in self.rows, f"row {a['data-key']} appears twice"
            self._row = a["data-key"]
            self.rows[self._row] = {}
            self.classes[self._row] = a.get("class", "")
        if tag == "td" and self._row is not None and "data-v" in a:
            assert a["data-col"] not in self.rows[self._row], f"column {a['data-col']} twice in row {self._row}"
            self.rows[self._row][a["data-col"]] = a["data-v"]

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None


def _parse(path) -> Page:
    page = Page()
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page.feed(text)
    page.close()
    return page


def _check_references(page: Page, folder: str) -> None:
    for src in page.images:
        assert src.startswith("data:image/png;base64,") or os.path.isfile(os.path.join(folder, src)), src
    for href in page.links:
        assert href.startswith(("#", "data:")) or os.path.exists(os.path.join(folder, href)), href
    assert "http://" not in "".join(page.images + page.links) and "https://" not in "".join(page.images + page.links)


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    from nopeek.sweeps import PRESET_INFO, run_sweep

    out = str(tmp_path_factory.mktemp("report") / "quick")
    config = PRESET_INFO["quick"].small.replace(epochs=2, attack_steps=30, alphas=(0.0, 8.0), noise_scales=(1.0,))
    run_sweep(config, out, progress=False, log=lambda line: None)
    return out


def test_a_sweep_writes_its_report_and_every_row_matches_results_csv(quick_sweep):
    path = os.path.join(quick_sweep, REPORT)
    assert os.path.isfile(path)  # written by the sweep itself
    page = _parse(path)
    _check_references(page, quick_sweep)
    with open(os.path.join(quick_sweep, "results.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keys = ["dataset", "model", "topology", "cut", "defense", "strength", "alpha", "noise_scale", "seed", "party",
            "message"]
    assert set(page.rows) == {"|".join(r[k] for k in keys) for r in rows}  # each row once, none more
    for r in rows:
        cells = page.rows["|".join(r[k] for k in keys)]
        for column in ("topology", "cut", "defense", "strength", "seed", "accuracy", "dcor", "dcor_null95",
                       "pdcor_label", "best_ssim", "beyond_label_ssim"):
            assert cells[column] == r[column], column  # in its own column, the raw value as written
        assert all(cells[c] == r.get(c, "") for c in cells), r  # and every other column shown is the file's too
    text = open(path, encoding="utf-8").read()
    assert "<select data-filter=\"topology\"" in text and "sortTable" in text and "data:image/png" in text


def test_collapsed_and_diverged_rows_are_marked(quick_sweep, tmp_path):
    folder = tmp_path / "marked"
    folder.mkdir()
    with open(os.path.join(quick_sweep, "results.csv"), newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    rows[0].update(collapsed="true", collapse_reason="accuracy at chance")
    rows[1].update(diverged="true", diverged_epoch="1")
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    page = _parse(write_report(str(folder)))
    keys = ["dataset", "model", "topology", "cut", "defense", "strength", "alpha", "noise_scale", "seed", "party",
            "message"]
    classes = [page.classes["|".join(r[k] for k in keys)] for r in rows]
    expected = ["diverged" if r.get("diverged") == "true" else "collapsed" if r.get("collapsed") == "true" else ""
                for r in rows]
    assert classes[:2] == ["collapsed", "diverged"] and classes == expected
    text = (folder / REPORT).read_text(encoding="utf-8")
    assert "collapsed: accuracy at chance" in text and "diverged at epoch 1" in text
    assert f"{expected.count('collapsed')} collapsed, {expected.count('diverged')} diverged" in text


def test_a_resumed_sweep_writes_its_report_again(quick_sweep):
    from nopeek.sweeps import PRESET_INFO, run_sweep

    path = os.path.join(quick_sweep, REPORT)
    os.remove(path)
    config = PRESET_INFO["quick"].small.replace(epochs=2, attack_steps=30, alphas=(0.0, 8.0), noise_scales=(1.0,))
    run_sweep(config, quick_sweep, progress=False, log=lambda line: None)  # every cell done: nothing trains
    assert set(_parse(path).rows) == set(_parse_rows(quick_sweep))


def _parse_rows(folder):
    keys = ["dataset", "model", "topology", "cut", "defense", "strength", "alpha", "noise_scale", "seed", "party",
            "message"]
    with open(os.path.join(folder, "results.csv"), newline="", encoding="utf-8") as fh:
        return ["|".join(r[k] for k in keys) for r in csv.DictReader(fh)]


def test_the_report_of_a_run_an_audit_and_a_cost_folder(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", "digits", "--limit", "300", "--epochs", "2", "--alpha", "0.5", "--out", run,
                 "--quiet"]) == 0
    cost = str(tmp_path / "cost")
    assert main(["cost", "--model", "mlp", "--dataset", "digits", "--client-counts", "2,4", "--out", cost]) == 0
    capsys.readouterr()
    audit = str(tmp_path / "audit")  # the audit committed under docs/results (scores.json and its figures)
    shutil.copytree(os.path.join(ROOT, "docs", "results", "audit"), audit)
    assert main(["attack", "--run", run, "--attack", "decoder", "--attack-steps", "30", "--quiet"]) == 0
    capsys.readouterr()
    # A folder that cannot be reported is named, and the others are still reported (exit 2).
    assert main(["report", run, str(tmp_path / "missing"), cost, audit]) == 2
    printed = capsys.readouterr()
    assert printed.out.split() == [os.path.join(f, REPORT) for f in (run, cost, audit)]
    assert printed.err.splitlines() == [f"nopeek report: error: {tmp_path / 'missing'}: not a folder",
                                        "nopeek report: 1 of 4 folders not reported"]
    import base64

    figure = base64.b64encode(open(os.path.join(run, "attacks", "decoder", "reconstructions.png"), "rb").read()).decode()
    for folder, words in ((run, ("transcript", "dL/dz", "dcor_null95", "Attacks on this run", "decoder (attacks/decoder)",
                                 "baseline_mse", figure)),
                          (cost, ("federated_learning", "split_learning")),
                          (audit, ("dcor_null95", "pdcor_label", "tradeoff.png"))):
        page = _parse(os.path.join(folder, REPORT))
        _check_references(page, folder)
        text = open(os.path.join(folder, REPORT), encoding="utf-8").read()
        assert all(w in text for w in words), words
    assert main(["report", str(tmp_path)]) == 2  # nothing nopeek wrote
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("not a folder nopeek wrote\n")
    assert write_report(run).endswith(REPORT)
