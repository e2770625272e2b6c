"""The building blocks of a report page: one self-contained HTML file, no server, no network.

Figures and sample grids are embedded as data URIs; the table's sorting and filtering is a
few lines of inline JavaScript; the styles are inline. Everything here is escaped text.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

STYLE = """
body { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.82em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f4f8; cursor: pointer; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.collapsed td { background: #fff5e6; } tr.diverged td { background: #fde8e8; color: #999; }
tr:hover td { background: #eef3ff; }
.filters { margin: 0.6em 0; font-size: 0.9em; } .filters label { margin-right: 1em; }
img.fig { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
img.thumb { height: 36px; image-rendering: pixelated; }
details { margin: 0.5em 0; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.legend { font-size: 0.85em; color: #444; max-width: 70em; }
.tag { display: inline-block; padding: 0 0.4em; border-radius: 3px; font-size: 0.8em; }
.tag.collapsed { background: #ffe0b3; } .tag.diverged { background: #f8c4c4; }
"""

SCRIPT = """
function sortTable(table, col, numeric) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const dir = table.dataset.sortCol == col && table.dataset.sortDir == "asc" ? "desc" : "asc";
  rows.sort((a, b) => {
    let x = a.cells[col].dataset.v ?? a.cells[col].textContent, y = b.cells[col].dataset.v ?? b.cells[col].textContent;
    if (numeric) { x = parseFloat(x); y = parseFloat(y); if (isNaN(x)) x = -Infinity; if (isNaN(y)) y = -Infinity; }
    return (x < y ? -1 : x > y ? 1 : 0) * (dir == "asc" ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.sortCol = col; table.dataset.sortDir = dir;
}
function applyFilters(table) {
  const selects = document.querySelectorAll("select[data-filter]");
  Array.from(table.tBodies[0].rows).forEach(row => {
    let show = true;
    selects.forEach(s => { if (s.value && row.dataset[s.dataset.filter] != s.value) show = false; });
    row.style.display = show ? "" : "none";
  });
}
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(path: str) -> str:
    with open(path, "rb") as fh:
        return "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")


def figure_png(fig) -> str:
    """A matplotlib figure as a data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def samples_png(originals: np.ndarray, reconstructions: np.ndarray | None, count: int = 8) -> str:
    """A small grid, originals above their reconstructions, as a PNG data URI (PIL, fast)."""
    from PIL import Image

    def tile(batch):
        batch = np.asarray(batch, np.float32)[:count]
        if batch.ndim == 2:  # tabular samples: one row of grey bars per sample
            side = int(np.ceil(np.sqrt(batch.shape[1])))
            padded = np.zeros((len(batch), side * side), np.float32)
            padded[:, : batch.shape[1]] = batch
            batch = padded.reshape(len(batch), side, side, 1)
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)
        return np.concatenate(list(np.clip(batch, 0, 1)), axis=1)

    rows = [tile(originals)]
    if reconstructions is not None:
        rows.append(tile(reconstructions))
    image = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def page(title: str, subtitle: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{subtitle}</p>" + "".join(sections) + "</body></html>\n")


def section(title: str, body: str) -> str:
    return f"<h2>{esc(title)}</h2>{body}"


def figures(paths: list[str]) -> str:
    return "".join(f"<div><img class=\"fig\" alt=\"{esc(os.path.basename(p))}\" src=\"{png_data_uri(p)}\"></div>"
                   for p in paths if os.path.isfile(p))


def details(summary: str, obj) -> str:
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(json.dumps(obj, indent=2, default=str))}</pre></details>"


def simple_table(header: list[str], rows: list[list], *, text_columns=(0,)) -> str:
    def cell(i, v, tag):
        cls = " class=\"text\"" if i in text_columns else ""
        return f"<{tag}{cls}>{esc(v)}</{tag}>"

    head = "<tr>" + "".join(cell(i, h, "th") for i, h in enumerate(header)) + "</tr>"
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def number(v, digits: int = 3) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "" if v in (None, "") else str(v)
    if not np.isfinite(x):
        return ""
    return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.4g}"
