"""Pareto reports: one self-contained HTML file per study, with the data behind it as CSV and
Parquet files beside it.

    from kwsearch.report import load, write_report
    write_report(load("sqlite:///runs/demo/study.db", "demo"), Path("reports/demo.html"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kwsearch.report.data import ReportError, StudyData, load, replay_command
from kwsearch.report.page import render

__all__ = [
    "ReportError",
    "ReportFiles",
    "StudyData",
    "default_output",
    "load",
    "replay_command",
    "write_report",
]


@dataclass
class ReportFiles:
    html: Path
    csv: Path
    parquet: Path
    history_csv: Path


def default_output(name: str, folder: Path = Path("reports")) -> Path:
    """``reports/<name>.html``, the name made safe for a file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "study"
    return folder / f"{stem}.html"


def write_report(data: StudyData, out: Path) -> ReportFiles:
    """Write the page to ``out`` and, beside it, ``<stem>.csv`` and ``<stem>.parquet`` (one row
    per trial and baseline) and ``<stem>.history.csv`` (one row per trial and epoch)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        html=out,
        csv=out.with_suffix(".csv"),
        parquet=out.with_suffix(".parquet"),
        history_csv=out.with_suffix(".history.csv"),
    )
    table = data.trials.copy()
    table.to_csv(files.csv, index=False)
    for column in table.columns:  # Parquet wants one type per column; params mix numbers and labels
        if column.startswith("param:") and table[column].dtype == object:
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    table.to_parquet(files.parquet, index=False)
    data.history.to_csv(files.history_csv, index=False)
    out.write_text(render(data), encoding="utf-8")
    return files
