"""Every notebook runs top to bottom through the public API (nbclient) on its small preset,
and its plain-text source (jupytext percent format) and .ipynb say the same."""

import glob
import os
import re

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

FOLDER = os.path.join(os.path.dirname(__file__), "..", "notebooks")
SOURCES = sorted(glob.glob(os.path.join(FOLDER, "*.py")))
# Notebooks whose kernels run long attack loops compile as users run them (conftest.py).
FULL_COMPILE = {"dishonest_server", "modern_attacks"}


def test_there_is_a_notebook_per_figure():
    names = {os.path.basename(p)[:-3] for p in SOURCES}
    assert {"leakage_sweep", "fig_dcor_over_epochs", "fig_accuracy_over_epochs", "fig_reconstructions",
            "fig_tradeoff_noise", "where_nopeek_protects"} <= names
    assert FULL_COMPILE <= names  # a renamed notebook keeps its full_compile mark


@pytest.mark.parametrize("source", SOURCES, ids=[os.path.basename(p) for p in SOURCES])
def test_paired_forms_agree(source):
    ipynb = source[:-3] + ".ipynb"
    assert os.path.exists(ipynb), f"{ipynb} missing: run jupytext --sync {source}"
    a, b = jupytext.read(source), nbformat.read(ipynb, as_version=4)
    assert [(c.cell_type, c.source.strip()) for c in a.cells] == [(c.cell_type, c.source.strip()) for c in b.cells]
    assert not any(c.get("outputs") for c in b.cells if c.cell_type == "code"), "commit notebooks without outputs"


@pytest.mark.parametrize("source", SOURCES, ids=[os.path.basename(p) for p in SOURCES])
def test_each_notebook_states_its_full_size_result(source):
    text = "\n".join(c.source for c in jupytext.read(source).cells if c.cell_type == "markdown")
    assert "full" in text.lower() and re.search(r"\d+ (s|min|minutes) on 2 (shared )?CPU cores", text), \
        "name the full preset with its measured run time and result"
    assert "FULL_RESULT" not in text and "TODO" not in text


# What each notebook's printed output must contain (default: the sweep table's header).
PRINTED = {"cost_sl_vs_fl": ("split / federated", "crossover"), "dishonest_server": ("MSE", "fired")}


@pytest.mark.parametrize("source", [
    pytest.param(p, marks=[pytest.mark.full_compile] if os.path.basename(p)[:-3] in FULL_COMPILE else [])
    for p in SOURCES], ids=[os.path.basename(p) for p in SOURCES])
def test_notebook_executes(source, tmp_path, monkeypatch):
    monkeypatch.setenv("NOPEEK_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("NOPEEK_NOTEBOOK_SIZE", "small")
    nb = jupytext.read(source)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not any(o.output_type == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for expected in PRINTED.get(os.path.basename(source)[:-3], ("acc", "dCor")):  # the results were printed
        assert expected in text, expected
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1
