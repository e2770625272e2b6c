"""Every number in a results table of the README and the guides comes from a committed file.

A results table (one with several numeric cells) must sit between `<!-- table: NAME -->`
markers; `docs/results.py` draws table NAME from its file under `docs/results/`, and here
every marked table is drawn again and must equal the text, digit for digit. Every preset
records where its full run's results are (`docs/results/NAME/run.json`), and the run time
it states is the one that file recorded.

A table that is reference, not results (a list of models and their blocks, of image modes
and how they are read) is exempt when the line just before its first row is exactly
`<!-- not results -->`. A markdown file inside `docs/results/` (a command's own report) is
a results file itself, not a page drawn from one, and is not checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_RESULTS = "<!-- not results -->"
NUMERIC_CELL = re.compile(r"^\**[-+]?\d+(\.\d+)?(e[-+]?\d+)?\**( ?[/(+].*)?$")


def _tables_module():
    spec = importlib.util.spec_from_file_location("docs_results", os.path.join(ROOT, "docs", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULTS = _tables_module()
FILES = RESULTS.marked_files()


def _tables(text: str):
    """(start line, lines) of every markdown table outside code blocks."""
    lines, out, inside, i = text.split("\n"), [], False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            inside = not inside
        if not inside and lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((i, lines[i:j]))
            i = j
            continue
        i += 1
    return out


def _numeric_cells(block) -> int:
    cells = [c.strip() for line in block[2:] for c in line.strip().strip("|").split("|")]
    return sum(bool(NUMERIC_CELL.match(c)) for c in cells)


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_every_results_table_is_drawn_from_its_file(path):
    text = open(path, encoding="utf-8").read()
    marked = {m.start(2): (m.group(1), m.group(2)) for m in RESULTS.MARKER.finditer(text)}
    for name, body in marked.values():
        assert name in RESULTS.TABLES, f"{path}: no renderer for table {name!r}"
        assert RESULTS.render(name) == body, f"{path}: table {name!r} differs from its file (python docs/results.py tables)"
    spans = [(start, start + len(body)) for start, (_, body) in marked.items()]
    offsets = [0]
    for line in text.split("\n"):
        offsets.append(offsets[-1] + len(line) + 1)
    lines = text.split("\n")
    for line_no, block in _tables(text):
        if line_no > 0 and lines[line_no - 1] == NOT_RESULTS:
            continue
        if _numeric_cells(block) >= 4:
            at = offsets[line_no]
            assert any(a <= at < b for a, b in spans), (
                f"{os.path.relpath(path, ROOT)}:{line_no + 1}: a table of results without a <!-- table: NAME --> marker")


def test_presets_state_the_time_their_results_file_recorded():
    from nopeek.sweeps import PRESET_INFO

    for name, preset in PRESET_INFO.items():
        run = os.path.join(ROOT, "docs", "results", name, "run.json")
        if preset.seconds is None:
            continue
        assert os.path.isfile(run), f"preset {name}: no docs/results/{name}/run.json behind its time"
        with open(run, encoding="utf-8") as fh:
            assert json.load(fh)["seconds"] == preset.seconds, name
        with open(os.path.join(ROOT, "docs", "results", name, "config.json"), encoding="utf-8") as fh:
            stored = json.load(fh)
        current = preset.config.to_dict()
        assert set(stored) <= set(current), f"preset {name}: its results file has fields the config lost"
        # Read back as a sweep folder is on resume (`SweepConfig.from_dict`): a field added since
        # the run takes its default, a field whose spelling changed its new one.
        read_back = type(preset.config).from_dict(stored).to_dict()
        for field, value in current.items():
            assert value == read_back[field], (
                f"preset {name}: its results file was made with another {field} ({stored.get(field)!r} there)")


def _file_values(folder: str) -> list[float]:
    import csv

    values = []
    for name in ("results.csv", "summary.csv"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for v in row.values():
                    try:
                        values.append(float(v))
                    except (TypeError, ValueError):
                        pass
    return values


def test_presets_results_sentences_quote_their_files():
    """Each decimal number in a preset's `result` sentence is a value of its results file
    (rounded as written; a percentage as a share), so the sentence cannot drift from the run."""
    from nopeek.sweeps import PRESET_INFO

    for name, preset in PRESET_INFO.items():
        folder = os.path.join(ROOT, "docs", "results", name)
        if preset.seconds is None or not os.path.isdir(folder):
            continue
        values = _file_values(folder)
        for text in re.findall(r"\d+\.\d+%?", preset.result):
            digits = len(text.rstrip("%").split(".")[1])
            number = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
            digits += 2 if text.endswith("%") else 0
            assert any(abs(round(v, digits) - number) < 10 ** -(digits + 1) for v in values), (
                f"preset {name}: {text} in its result is not a value of docs/results/{name}")
