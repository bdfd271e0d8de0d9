"""Comparison report of training runs: one self-contained HTML page (tables and embedded plots).

>>> from prectr.report import write_report
>>> write_report([Path("runs/dnn"), Path("runs/prectr")], Path("report.html"))  # doctest: +SKIP
"""

from prectr.report.page import best_rows, render, write_report
from prectr.report.runs import RunError, RunResult, load_run

__all__ = ["RunError", "RunResult", "best_rows", "load_run", "render", "write_report"]
