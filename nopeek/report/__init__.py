"""`nopeek report DIR`: one self-contained HTML page (`DIR/report.html`) for a sweep, a
training run, an audit, an attack or a cost report: tables, figures and samples inline."""

from nopeek.report._pages import REPORT, kind_of, read_results, write_report

__all__ = ["REPORT", "kind_of", "read_results", "write_report"]
