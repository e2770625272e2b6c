"""The documentation site builds with no warning (`mkdocs build --strict`): a broken link, a
missing page, or a docstring whose parameters no longer match its signature fails here.
The executed notebooks it shows are the notebooks of `notebooks/`, cell for cell."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import jupytext
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": ROOT}
    # not --quiet: it hides the warnings, and --strict then has nothing to abort on
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("index.html", "guide/sweeps/index.html", "api/index.html", "notebooks/leakage_sweep/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "train_stack" in api and "distance_correlation_test" in api  # generated from the docstrings


def test_the_sites_notebooks_are_the_notebooks():
    sources = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.py")))
    for source in sources:
        shown = os.path.join(ROOT, "docs", "notebooks", os.path.basename(source)[:-3] + ".ipynb")
        assert os.path.isfile(shown), f"{shown} missing: python docs/results.py notebooks"
        a, b = jupytext.read(source), nbformat.read(shown, as_version=4)
        assert [(c.cell_type, c.source.strip()) for c in a.cells] == [(c.cell_type, c.source.strip()) for c in b.cells]
        code = [c for c in b.cells if c.cell_type == "code"]
        # shown executed: every code cell has outputs, none an error (python docs/results.py notebooks NAME)
        assert all(c.get("outputs") for c in code), f"{shown}: a code cell without outputs"
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), f"{shown}: an error"
