"""The notebook runs top to bottom through the public API (nbclient), as CI would."""

import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "leakage_sweep.ipynb")


def test_leakage_sweep_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("NOPEEK_NOTEBOOK_OUT", str(tmp_path / "sweep"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not any(o.output_type == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "atk SSIM" in text and "nopeek" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    assert os.path.exists(tmp_path / "sweep" / "results.csv")
